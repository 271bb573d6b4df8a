/**
 * The Todo API, called with openapi-fetch and the types generated from its OpenAPI document
 * (clients/typescript/schema.d.ts): every path, parameter, body and answer below is checked by tsc.
 *
 * - Tokens are Better Auth JWTs (`authClient.token()`), renewed a minute before they expire, and
 *   once more if the API still says `token_expired`.
 * - Writes carry an `Idempotency-Key`; one that fails on the way (no answer, a 5xx, or the first
 *   attempt still running) is sent again with the same key, so it is never done twice.
 * - Changes carry `If-Match` with the version the user saw: a 412 is a `ConflictError` holding the
 *   task as it is now.
 */
import createClient from "openapi-fetch";
import type { components, paths } from "@todo-api/client/schema";
import { type FollowHandlers, follow } from "@todo-api/client/src/events";

export type Task = components["schemas"]["TaskRead"];
export type TrashedTask = components["schemas"]["TrashedTask"];
export type NewTask = components["schemas"]["TaskCreate"];
export type TaskPatch = components["schemas"]["TaskPatch"];
export type TagCount = components["schemas"]["TagCount"];
export type Problem = components["schemas"]["Problem"];
export type TaskQuery = NonNullable<paths["/api/{user_id}/tasks"]["get"]["parameters"]["query"]>;
export type TaskStatus = components["schemas"]["TaskStatus"];
export type TaskView = components["schemas"]["TaskView"];
export type Priority = components["schemas"]["Priority"];
export type Move = { before: string } | { after: string };

/** An error answer of the API (application/problem+json, with its stable `code`). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem,
  ) {
    super(problem.detail);
    this.name = "ApiError";
  }
}

/** 412: the task changed since the version the change was based on; `current` is it now. */
export class ConflictError extends ApiError {
  constructor(
    problem: Problem,
    readonly current: Task,
  ) {
    super(412, problem);
    this.name = "ConflictError";
  }
}

/** The `exp` of a JWT, in seconds (not verified here: the API does that). */
function expiryOf(token: string): number {
  const payload = token.split(".")[1] ?? "";
  const claims = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/"))) as { exp?: unknown };
  return typeof claims.exp === "number" ? claims.exp : 0;
}

/**
 * The bearer token to send: the last one while it has more than `marginSeconds` left, else a new
 * one from `mint` (one at a time). `force` asks for a new one whatever the clock says.
 */
export function tokenSource(
  mint: () => Promise<string | null>,
  marginSeconds = 60,
): (force?: boolean) => Promise<string> {
  let token: string | null = null;
  let expires = 0;
  let pending: Promise<string> | null = null;
  return (force = false) => {
    if (!force && token !== null && Date.now() < (expires - marginSeconds) * 1000) {
      return Promise.resolve(token);
    }
    pending ??= mint()
      .then((fresh) => {
        if (fresh === null) throw new Error("signed out: Better Auth gave no token");
        token = fresh;
        expires = expiryOf(fresh);
        return fresh;
      })
      .finally(() => {
        pending = null;
      });
    return pending;
  };
}

type Answer<T> = { data?: T; error?: Problem; response: Response };
type HeaderMap = Record<string, string>;

const RETRY_DELAY_MS = 1000;

function retryable(answer: Answer<unknown> | Error): boolean {
  if (answer instanceof Error) return true; // no answer: a lost connection, a timeout
  const { status } = answer.response;
  return status >= 500 || (status === 409 && answer.error?.code === "idempotency_key_in_progress");
}

/** A fresh UUID (also where `crypto.randomUUID` is missing: plain http on a LAN address). */
export function uuid(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40;
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function createApi(baseUrl: string, userId: string, token: (force?: boolean) => Promise<string>) {
  const api = createClient<paths>({ baseUrl });
  const user = { user_id: userId };
  const onTask = (taskId: string) => ({ path: { ...user, task_id: taskId } });

  /**
   * Sends a request with the bearer token (and the write's headers); once more with a new token
   * on `token_expired`, and, for a write, once more with the same key when it may not have been
   * done. Returns the answer's data, or throws an `ApiError` (a `ConflictError` on 412).
   */
  async function send<T>(
    call: (headers: HeaderMap) => Promise<Answer<T>>,
    write: HeaderMap | null = null,
  ): Promise<T> {
    const attempt = async (force: boolean): Promise<Answer<T>> =>
      call({ Authorization: `Bearer ${await token(force)}`, ...write });
    const once = async (): Promise<Answer<T>> => {
      const answer = await attempt(false);
      const expired = answer.response.status === 401 && answer.error?.code === "token_expired";
      return expired ? attempt(true) : answer;
    };
    let answer: Answer<T> | Error = await once().catch((error: unknown) =>
      error instanceof Error ? error : new Error(String(error)),
    );
    if (write?.["Idempotency-Key"] !== undefined && retryable(answer)) {
      await new Promise((resolve) => setTimeout(resolve, RETRY_DELAY_MS));
      answer = await once();
    }
    if (answer instanceof Error) throw answer;
    if (answer.error !== undefined) {
      const { error, response } = answer;
      if (response.status === 412 && "current" in error) {
        throw new ConflictError(error, (error as { current: Task }).current);
      }
      throw new ApiError(response.status, error);
    }
    return answer.data as T;
  }

  const keyed = (): HeaderMap => ({ "Idempotency-Key": uuid() });
  const conditional = (version: number): HeaderMap => ({ ...keyed(), "If-Match": `"${version}"` });

  return {
    listTasks: (query: TaskQuery) =>
      send((headers) => api.GET("/api/{user_id}/tasks", { params: { path: user, query }, headers })),

    listTags: () => send((headers) => api.GET("/api/{user_id}/tags", { params: { path: user }, headers })),

    listTrash: () =>
      send((headers) =>
        api.GET("/api/{user_id}/trash", { params: { path: user, query: { limit: 100 } }, headers }),
      ),

    /** The task is created with the id given, so the optimistic copy already has the real id. */
    createTask: (task: NewTask & { id: string }) =>
      send(
        (headers) => api.POST("/api/{user_id}/tasks", { params: { path: user }, body: task, headers }),
        keyed(),
      ),

    patchTask: (task: Task, patch: TaskPatch) =>
      send(
        (headers) =>
          api.PATCH("/api/{user_id}/tasks/{task_id}", { params: onTask(task.id), body: patch, headers }),
        conditional(task.version),
      ),

    completeTask: (task: Task, completed: boolean) =>
      send(
        (headers) =>
          api.PATCH("/api/{user_id}/tasks/{task_id}/complete", {
            params: onTask(task.id),
            body: { completed },
            headers,
          }),
        conditional(task.version),
      ),

    moveTask: (task: Task, where: Move) =>
      send(
        (headers) =>
          api.POST("/api/{user_id}/tasks/{task_id}/move", { params: onTask(task.id), body: where, headers }),
        conditional(task.version),
      ),

    /** Moves the task to the trash (DELETE is idempotent: no key needed, If-Match still is). */
    deleteTask: (task: Task) =>
      send(
        (headers) => api.DELETE("/api/{user_id}/tasks/{task_id}", { params: onTask(task.id), headers }),
        { "If-Match": `"${task.version}"` },
      ),

    restoreTask: (taskId: string) =>
      send(
        (headers) => api.POST("/api/{user_id}/trash/{task_id}/restore", { params: onTask(taskId), headers }),
        keyed(),
      ),

    /** Live updates (GET /api/{user_id}/events), until `handlers.signal` aborts. */
    followChanges: (handlers: FollowHandlers) =>
      follow(
        {
          url: `${baseUrl.replace(/\/$/, "")}/api/${encodeURIComponent(userId)}/events`,
          fetch: (request) => fetch(request),
          token: (force) => token(force),
        },
        handlers,
      ),
  };
}

export type TodoApi = ReturnType<typeof createApi>;
