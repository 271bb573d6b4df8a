/**
 * A small typed client for the Todo API, built on openapi-fetch and the generated `schema.d.ts`.
 *
 * Every path, parameter, body and response here is checked by `tsc` against the API's OpenAPI
 * document: when the API changes and the types are regenerated, whatever no longer fits stops
 * compiling.
 *
 * Tokens come from a token provider (Better Auth's `authClient.token()` is one) or, without one,
 * from this API's own accounts (`signUp`, `logIn`). When the API answers 401 `token_expired`, the
 * client gets a new token once (from the provider with `forceRefresh: true`, or through
 * `/api/auth/refresh`) and sends the request again, once.
 *
 * Creates and changes take an `idempotencyKey` (`{ idempotencyKey: crypto.randomUUID() }`): sent
 * again with the same key, after a timeout or a lost connection, a request gets the first one's
 * answer and is not done twice.
 */
import createClient from "openapi-fetch";
import type { components, paths } from "../schema";
import { type FollowHandlers, follow } from "./events.js";

export type { Change, FollowHandlers } from "./events.js";

export type Task = components["schemas"]["TaskRead"];
export type NewTask = components["schemas"]["TaskCreate"];
export type TaskReplacement = components["schemas"]["TaskReplace"];
export type TaskPatch = components["schemas"]["TaskPatch"];
export type TaskPage = components["schemas"]["TaskPage"];
export type User = components["schemas"]["UserRead"];
export type Session = components["schemas"]["AuthResponse"];
export type Problem = components["schemas"]["Problem"];
export type PreconditionProblem = components["schemas"]["PreconditionProblem"];
export type ChangesPage = components["schemas"]["ChangesPage"];
export type TrashPage = components["schemas"]["TrashPage"];
export type JsonWebKeySet = components["schemas"]["JsonWebKeySet"];
export type ProfileUpdate = components["schemas"]["ProfileUpdate"];
export type ExportDocument = components["schemas"]["ExportDocument"];
export type TagCount = components["schemas"]["TagCount"];
/** Where a task moves: just before another task, or just after one. */
export type TaskMove = { before: string; after?: never } | { after: string; before?: never };
type RefreshRequest = components["schemas"]["RefreshRequest"];
export type TaskQuery = NonNullable<paths["/api/{user_id}/tasks"]["get"]["parameters"]["query"]>;
export type TrashQuery = NonNullable<paths["/api/{user_id}/trash"]["get"]["parameters"]["query"]>;

/**
 * Gives the bearer token to send, or null when nobody is signed in. Called at the first request
 * that needs a token, and again with `forceRefresh: true` when the API said the token it gave has
 * expired: then it must not return that token again. With Better Auth:
 * `async () => (await authClient.token()).data?.token ?? null` (every call mints a fresh JWT).
 */
export type TokenProvider = (request: { forceRefresh: boolean }) => Promise<string | null>;

export interface TodoClientOptions {
  /** The API's origin, e.g. `process.env.NEXT_PUBLIC_API_URL` (`http://localhost:8000`). */
  baseUrl: string;
  /** Where tokens come from. Leave it out to use this API's own accounts (`signUp`, `logIn`). */
  token?: TokenProvider;
  /**
   * `"include"` when the API sends the refresh token as a cookie (`REFRESH_TOKEN_COOKIE=true`):
   * the auth calls (signup, login, refresh, logout, logout-all, password) then send and keep it.
   */
  credentials?: RequestCredentials;
  /** Another `fetch` (tests, server-side rendering); the global one by default. */
  fetch?: (request: Request) => Promise<Response>;
}

/**
 * How a create or a change is sent. `idempotencyKey` (1 to 255 printable ASCII characters, new for
 * each new request: `crypto.randomUUID()`) makes it safe to send again: a repeat with the same key
 * and the same arguments gets the first answer, and nothing is done twice. The same key with other
 * arguments is an `ApiError` 422 `idempotency_key_reused`; while the first request still runs, 409
 * `idempotency_key_in_progress` (try again after a second).
 */
export interface WriteOptions {
  idempotencyKey?: string;
}

/**
 * A change to a task you read: `ifMatch` is the `version` you showed the user. If the task has
 * changed since, the change is not made: an `ApiError` 412 `precondition_failed` whose problem's
 * `current` is the task as it is now (`isPreconditionFailed`).
 */
export interface ChangeOptions extends WriteOptions {
  ifMatch?: number;
}

/** The `Idempotency-Key` header of a write, when it has one. */
function keyed(options: WriteOptions): { header?: { "Idempotency-Key": string } } {
  return options.idempotencyKey === undefined
    ? {}
    : { header: { "Idempotency-Key": options.idempotencyKey } };
}

/** The headers of a change: its `Idempotency-Key` and its `If-Match`, when it has them. */
function conditional(options: ChangeOptions): {
  header?: { "Idempotency-Key"?: string; "If-Match"?: string };
} {
  const header = {
    ...(options.idempotencyKey === undefined ? {} : { "Idempotency-Key": options.idempotencyKey }),
    ...(options.ifMatch === undefined ? {} : { "If-Match": `"${options.ifMatch}"` }),
  };
  return Object.keys(header).length === 0 ? {} : { header };
}

/** An error answer of the API: its problem+json body, with the stable machine-readable `code`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem,
  ) {
    super(`${problem.status} ${problem.code}: ${problem.detail}`);
    this.name = "ApiError";
  }
}

/** Whether an error is a 412: the task changed since its `version` was read; `current` is it now. */
export function isPreconditionFailed(
  error: unknown,
): error is ApiError & { readonly problem: PreconditionProblem } {
  return error instanceof ApiError && error.status === 412 && "current" in error.problem;
}

type Answer<T> = { data?: T; error?: Problem; response: Response };

/** The data of a successful answer, or an `ApiError` thrown with the problem of a failed one. */
function unwrap<T>(result: Answer<T>): T {
  if (result.error !== undefined) {
    throw new ApiError(result.response.status, result.error);
  }
  return result.data as T;
}

/** The `sub` of a JWT, which is the `{user_id}` of the task routes. Not verified: the API does. */
function subjectOf(token: string): string {
  const payload = token.split(".")[1] ?? "";
  const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
  const bytes = Uint8Array.from(atob(base64), (char) => char.charCodeAt(0));
  const claims: unknown = JSON.parse(new TextDecoder().decode(bytes));
  if (typeof claims === "object" && claims !== null && "sub" in claims) {
    const { sub } = claims;
    if (typeof sub === "string") {
      return sub;
    }
  }
  throw new Error("the access token has no subject (sub)");
}

/** What one attempt of a request is sent with. */
interface Bearer {
  headers: { Authorization?: string };
  /** The token's subject; throws when there is no token (nobody is signed in). */
  userId(): string;
}

function bearerOf(token: string | null): Bearer {
  return {
    headers: token === null ? {} : { Authorization: `Bearer ${token}` },
    userId() {
      if (token === null) {
        throw new Error("not signed in: there is no access token");
      }
      return subjectOf(token);
    },
  };
}

export function createTodoClient(options: TodoClientOptions) {
  const api = createClient<paths>({
    baseUrl: options.baseUrl,
    ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
  });
  const credentials = options.credentials === undefined ? {} : { credentials: options.credentials };

  // The token in use (undefined: not asked for yet), a renewal under way, and this API's own
  // refresh token when its accounts are used (null in cookie mode: the cookie holds it).
  let token: string | null | undefined;
  let pending: Promise<string | null> | undefined;
  let refreshToken: string | null = null;

  // The refresh token in the body, or (cookie mode) an empty body: these types come from the
  // default document, where the body must hold it; a cookie-mode API's document says optional.
  const refreshBody = (): RefreshRequest =>
    refreshToken === null ? ({} as RefreshRequest) : { refresh_token: refreshToken };

  const provider: TokenProvider =
    options.token ??
    (async ({ forceRefresh }) => {
      if (forceRefresh && (refreshToken !== null || options.credentials === "include")) {
        await client.refresh();
      }
      return token ?? null;
    });

  function ask(forceRefresh: boolean): Promise<string | null> {
    pending ??= provider({ forceRefresh })
      .then((fresh) => (token = fresh))
      .finally(() => (pending = undefined));
    return pending;
  }

  async function currentToken(): Promise<string | null> {
    return pending ?? (token === undefined ? ask(false) : token);
  }

  /** A token other than `stale`: one that a concurrent renewal got, or a new one. */
  async function renewedToken(stale: string | null): Promise<string | null> {
    if (pending !== undefined) {
      return pending;
    }
    return token !== undefined && token !== stale ? token : ask(true);
  }

  /** Sends a request with the token; on 401 `token_expired`, renews it and sends it once more. */
  async function authorized<T>(send: (bearer: Bearer) => Promise<Answer<T>>): Promise<T> {
    const used = await currentToken();
    let answer = await send(bearerOf(used));
    if (answer.response.status === 401 && answer.error?.code === "token_expired") {
      answer = await send(bearerOf(await renewedToken(used)));
    }
    return unwrap(answer);
  }

  /** The tokens of this API's own accounts become the client's. */
  function adopt(session: Session): Session {
    token = session.access_token;
    refreshToken = session.refresh_token ?? null;
    return session;
  }

  function forget(): void {
    token = undefined;
    refreshToken = null;
  }

  const client = {
    /** The signed-in user's id (the token's subject): the `{user_id}` of the task routes. */
    async userId(): Promise<string> {
      return bearerOf(await currentToken()).userId();
    },

    // --- Accounts (this API's own; Better Auth users only use `me`) -------------------------

    async signUp(email: string, password: string, name?: string): Promise<Session> {
      const body = name === undefined ? { email, password } : { email, password, name };
      return adopt(unwrap(await api.POST("/api/auth/signup", { body, ...credentials })));
    },

    async logIn(email: string, password: string): Promise<Session> {
      const body = { email, password };
      return adopt(unwrap(await api.POST("/api/auth/login", { body, ...credentials })));
    },

    /** New tokens for the refresh token this client holds (or the cookie, in cookie mode). */
    async refresh(): Promise<Session> {
      const body = refreshBody();
      return adopt(unwrap(await api.POST("/api/auth/refresh", { body, ...credentials })));
    },

    /** Ends this session (its refresh token); the client forgets its tokens. */
    async logOut(): Promise<void> {
      const body = refreshBody();
      unwrap(await api.POST("/api/auth/logout", { body, ...credentials }));
      forget();
    },

    /** Ends every session of the user and every access token issued so far. */
    async logOutAll(): Promise<void> {
      await authorized((bearer) =>
        api.POST("/api/auth/logout-all", { headers: bearer.headers, ...credentials }),
      );
      forget();
    },

    /** Every earlier token stops working; the answer's tokens become the client's. */
    async changePassword(currentPassword: string, newPassword: string): Promise<Session> {
      const body = { current_password: currentPassword, new_password: newPassword };
      const session = await authorized((bearer) =>
        api.POST("/api/auth/password", { body, headers: bearer.headers, ...credentials }),
      );
      return adopt(session);
    },

    async me(): Promise<User> {
      return authorized((bearer) => api.GET("/api/auth/me", { headers: bearer.headers }));
    },

    /** Changes the name and the time zone (a field left out is kept; `name: null` clears it). */
    async updateProfile(profile: ProfileUpdate): Promise<User> {
      return authorized((bearer) =>
        api.PATCH("/api/auth/me", { body: profile, headers: bearer.headers }),
      );
    },

    /**
     * Deletes the account and everything in it, for good; the client forgets its tokens. Local
     * accounts confirm with their password; Better Auth users give none.
     */
    async deleteAccount(password?: string): Promise<void> {
      await authorized((bearer) =>
        password === undefined
          ? api.DELETE("/api/auth/me", { headers: bearer.headers })
          : api.DELETE("/api/auth/me", { body: { password }, headers: bearer.headers }),
      );
      forget();
    },

    /** Mails a reset link if the email has a local account; resolves the same either way. */
    async forgotPassword(email: string): Promise<void> {
      unwrap(await api.POST("/api/auth/password/forgot", { body: { email } }));
    },

    /** Sets a new password with the token from the mailed link; its tokens become the client's. */
    async resetPassword(token: string, newPassword: string): Promise<Session> {
      const body = { token, new_password: newPassword };
      return adopt(unwrap(await api.POST("/api/auth/password/reset", { body, ...credentials })));
    },

    /** The public keys that verify this API's own tokens. */
    async jwks(): Promise<JsonWebKeySet> {
      return unwrap(await api.GET("/api/auth/jwks"));
    },

    // --- Tasks --------------------------------------------------------------------------------

    async listTasks(query: TaskQuery = {}): Promise<TaskPage> {
      return authorized((bearer) =>
        api.GET("/api/{user_id}/tasks", {
          params: { path: { user_id: bearer.userId() }, query },
          headers: bearer.headers,
        }),
      );
    },

    async createTask(task: NewTask, options: WriteOptions = {}): Promise<Task> {
      return authorized((bearer) =>
        api.POST("/api/{user_id}/tasks", {
          params: { path: { user_id: bearer.userId() }, ...keyed(options) },
          body: task,
          headers: bearer.headers,
        }),
      );
    },

    async getTask(taskId: string): Promise<Task> {
      return authorized((bearer) =>
        api.GET("/api/{user_id}/tasks/{task_id}", {
          params: { path: { user_id: bearer.userId(), task_id: taskId } },
          headers: bearer.headers,
        }),
      );
    },

    /** Fields left out are reset to their defaults. */
    async replaceTask(
      taskId: string,
      task: TaskReplacement,
      options: Pick<ChangeOptions, "ifMatch"> = {},
    ): Promise<Task> {
      return authorized((bearer) =>
        api.PUT("/api/{user_id}/tasks/{task_id}", {
          params: { path: { user_id: bearer.userId(), task_id: taskId }, ...conditional(options) },
          body: task,
          headers: bearer.headers,
        }),
      );
    },

    /** Changes the fields given and keeps the others; `null` clears `description` or `due_date`. */
    async patchTask(taskId: string, patch: TaskPatch, options: ChangeOptions = {}): Promise<Task> {
      return authorized((bearer) =>
        api.PATCH("/api/{user_id}/tasks/{task_id}", {
          params: { path: { user_id: bearer.userId(), task_id: taskId }, ...conditional(options) },
          body: patch,
          headers: bearer.headers,
        }),
      );
    },

    /**
     * Without `completed`, toggles the task; with it, sets its state. A toggle sent again with its
     * `idempotencyKey` does not toggle back.
     */
    async completeTask(
      taskId: string,
      completed?: boolean,
      options: ChangeOptions = {},
    ): Promise<Task> {
      return authorized((bearer) => {
        const path = { user_id: bearer.userId(), task_id: taskId };
        const params = { path, ...conditional(options) };
        return completed === undefined
          ? api.PATCH("/api/{user_id}/tasks/{task_id}/complete", { params, headers: bearer.headers })
          : api.PATCH("/api/{user_id}/tasks/{task_id}/complete", {
              params,
              body: { completed },
              headers: bearer.headers,
            });
      });
    },

    /** Moves the task to the trash; resolves also when it was already gone. */
    async deleteTask(taskId: string, options: Pick<ChangeOptions, "ifMatch"> = {}): Promise<void> {
      await authorized((bearer) =>
        api.DELETE("/api/{user_id}/tasks/{task_id}", {
          params: { path: { user_id: bearer.userId(), task_id: taskId }, ...conditional(options) },
          headers: bearer.headers,
        }),
      );
    },

    /** Moves every completed task to the trash; how many. */
    async clearCompleted(options: WriteOptions = {}): Promise<number> {
      const cleared = await authorized((bearer) =>
        api.POST("/api/{user_id}/tasks/clear-completed", {
          params: { path: { user_id: bearer.userId() }, ...keyed(options) },
          headers: bearer.headers,
        }),
      );
      return cleared.deleted;
    },

    // --- Organizing ---------------------------------------------------------------------------

    /**
     * Puts the task just before (`{ before: id }`) or just after (`{ after: id }`) another, in the
     * user's own order (`listTasks({ sort: "position" })`). Only the moved task changes, so a drag
     * is one write; an `ApiError` 404 when either task is missing.
     */
    async moveTask(taskId: string, where: TaskMove, options: ChangeOptions = {}): Promise<Task> {
      return authorized((bearer) =>
        api.POST("/api/{user_id}/tasks/{task_id}/move", {
          params: { path: { user_id: bearer.userId(), task_id: taskId }, ...conditional(options) },
          body: where,
          headers: bearer.headers,
        }),
      );
    },

    /** Every tag of the user's live tasks with how many tasks have it, by name ignoring case. */
    async listTags(): Promise<TagCount[]> {
      return authorized((bearer) =>
        api.GET("/api/{user_id}/tags", {
          params: { path: { user_id: bearer.userId() } },
          headers: bearer.headers,
        }),
      );
    },

    // --- Staying in sync ----------------------------------------------------------------------

    /**
     * The changes after `since` (the `next` of an earlier answer), oldest first; without it, a
     * full sync. Keep `next`, and ask again at once while `has_more`. An `ApiError` 410
     * `sync_expired` means: sync again without `since`.
     */
    async listChanges(since?: string, limit?: number): Promise<ChangesPage> {
      const query = {
        ...(since === undefined ? {} : { since }),
        ...(limit === undefined ? {} : { limit }),
      };
      return authorized((bearer) =>
        api.GET("/api/{user_id}/changes", {
          params: { path: { user_id: bearer.userId() }, query },
          headers: bearer.headers,
        }),
      );
    },

    /**
     * Live updates: calls `onChange` with each change to the user's tasks as it commits (the
     * changes feed's shape), until `signal` aborts. It reconnects by itself, with a fresh token
     * and the last change's cursor, so nothing is missed; `onReset` means the cursor was too old
     * (sync again from the start with `listChanges()`). Resolves once `signal` has aborted.
     */
    async followChanges(handlers: FollowHandlers): Promise<void> {
      const userId = await client.userId();
      return follow(
        {
          url: `${options.baseUrl.replace(/\/$/, "")}/api/${encodeURIComponent(userId)}/events`,
          fetch: options.fetch ?? ((request) => fetch(request)),
          token: async (forceRefresh) =>
            forceRefresh ? renewedToken(await currentToken()) : currentToken(),
        },
        handlers,
      );
    },

    async listTrash(query: TrashQuery = {}): Promise<TrashPage> {
      return authorized((bearer) =>
        api.GET("/api/{user_id}/trash", {
          params: { path: { user_id: bearer.userId() }, query },
          headers: bearer.headers,
        }),
      );
    },

    async restoreTask(taskId: string, options: WriteOptions = {}): Promise<Task> {
      return authorized((bearer) =>
        api.POST("/api/{user_id}/trash/{task_id}/restore", {
          params: { path: { user_id: bearer.userId(), task_id: taskId }, ...keyed(options) },
          headers: bearer.headers,
        }),
      );
    },

    /** Deletes a task of the trash for good (or, without `taskId`, the whole trash). */
    async purgeTrash(taskId?: string): Promise<void> {
      await authorized((bearer) =>
        taskId === undefined
          ? api.DELETE("/api/{user_id}/trash", {
              params: { path: { user_id: bearer.userId() } },
              headers: bearer.headers,
            })
          : api.DELETE("/api/{user_id}/trash/{task_id}", {
              params: { path: { user_id: bearer.userId(), task_id: taskId } },
              headers: bearer.headers,
            }),
      );
    },

    /** Everything of the user (every task, the trash too), as the export document. */
    async exportData(): Promise<ExportDocument> {
      return authorized((bearer) =>
        api.GET("/api/{user_id}/export", {
          params: { path: { user_id: bearer.userId() } },
          headers: bearer.headers,
        }),
      );
    },

    // --- Operations ---------------------------------------------------------------------------

    async health(): Promise<{ status: string }> {
      return unwrap(await api.GET("/health"));
    },

    /** Throws an `ApiError` (503 `service_unavailable`) while the database does not answer. */
    async ready(): Promise<{ status: string }> {
      return unwrap(await api.GET("/ready"));
    },
  };
  return client;
}

export type TodoClient = ReturnType<typeof createTodoClient>;
