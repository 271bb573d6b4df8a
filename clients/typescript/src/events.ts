/**
 * Live updates: `GET /api/{user_id}/events`, followed with `fetch` (the browser's `EventSource`
 * cannot send the `Authorization` header). Every connection, the first and each reconnection,
 * sends a fresh token and the id of the last event handled (`Last-Event-ID`), so nothing is
 * missed or repeated across reconnections (the server ends a stream when its token expires, and
 * on shutdown).
 */
import type { components } from "../schema";

export type Change = components["schemas"]["ChangesPage"]["changes"][number];

export interface FollowHandlers {
  /** A change, as the changes feed gives it, and the cursor just after it. */
  onChange: (change: Change, cursor: string) => void;
  /** The cursor was too old (the trash was purged since): sync again from the start. */
  onReset?: (cursor: string) => void;
  /** Each time a stream is open (the first time and after each reconnection). */
  onOpen?: () => void;
  /** Start after this cursor (a feed `next`, or an event's cursor); from now without it. */
  since?: string;
  /** Stops following. */
  signal?: AbortSignal;
  /** Wait before reconnecting, in milliseconds (1,000 by default; a 429's `Retry-After` wins). */
  retryMs?: number;
}

export interface FollowContext {
  url: string;
  fetch: (request: Request) => Promise<Response>;
  /** The token to send (`forceRefresh` after the API said the last one expired). */
  token: (forceRefresh: boolean) => Promise<string | null>;
}

interface ServerSentEvent {
  event: string;
  data: string;
  id: string | undefined;
}

/** The events of a `text/event-stream` body, as they arrive. */
async function* parse(body: ReadableStream<Uint8Array>): AsyncGenerator<ServerSentEvent> {
  const decoder = new TextDecoder();
  let buffer = "";
  let event = "message";
  let data: string[] = [];
  let id: string | undefined;
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
      if (line === "") {
        if (data.length > 0) {
          yield { event, data: data.join("\n"), id };
        }
        event = "message";
        data = [];
        id = undefined;
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "data") data.push(value);
        else if (name === "event") event = value;
        else if (name === "id") id = value;
      }
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Follows the stream until `signal` aborts: reconnects after every end or failure. */
export async function follow(context: FollowContext, handlers: FollowHandlers): Promise<void> {
  let cursor = handlers.since;
  let forceRefresh = false;
  while (!handlers.signal?.aborted) {
    let wait = handlers.retryMs ?? 1000;
    try {
      const token = await context.token(forceRefresh);
      forceRefresh = false;
      const headers: Record<string, string> = { Accept: "text/event-stream" };
      if (token !== null) headers.Authorization = `Bearer ${token}`;
      if (cursor !== undefined) headers["Last-Event-ID"] = cursor;
      const init: RequestInit = { headers };
      if (handlers.signal !== undefined) init.signal = handlers.signal;
      const response = await context.fetch(new Request(context.url, init));
      if (response.ok && response.body !== null) {
        handlers.onOpen?.();
        for await (const event of parse(response.body)) {
          if (event.id !== undefined) cursor = event.id;
          if (event.event === "change" && event.id !== undefined) {
            handlers.onChange(JSON.parse(event.data) as Change, event.id);
          } else if (event.event === "reset" && event.id !== undefined) {
            handlers.onReset?.(event.id);
          }
        }
      } else {
        const problem = (await response.json().catch(() => ({}))) as { code?: string };
        if (response.status === 401 && problem.code === "token_expired") forceRefresh = true;
        if (response.status === 400 && problem.code === "invalid_cursor") cursor = undefined;
        const retryAfter = Number(response.headers.get("Retry-After"));
        if (retryAfter > 0) wait = retryAfter * 1000;
      }
    } catch (error) {
      if (handlers.signal?.aborted) break;
      // A dropped connection: reconnect below, from the last event handled.
      void error;
    }
    await sleep(wait, handlers.signal);
  }
}
