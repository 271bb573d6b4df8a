/**
 * A small typed client for the Todo API, built on openapi-fetch and the generated `schema.d.ts`.
 *
 * Every path, parameter, body and response here is checked by `tsc` against the API's OpenAPI
 * document: when the API changes and the types are regenerated, whatever no longer fits stops
 * compiling.
 */
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "../schema";

export type Task = components["schemas"]["TaskRead"];
export type NewTask = components["schemas"]["TaskCreate"];
export type TaskReplacement = components["schemas"]["TaskReplace"];
export type TaskPage = components["schemas"]["TaskPage"];
export type User = components["schemas"]["UserRead"];
export type Problem = components["schemas"]["Problem"];
export type TaskQuery = NonNullable<paths["/api/{user_id}/tasks"]["get"]["parameters"]["query"]>;

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

/** The data of a successful answer, or an `ApiError` thrown with the problem of a failed one. */
function unwrap<T>(result: { data?: T; error?: Problem; response: Response }): T {
  if (result.error !== undefined) {
    throw new ApiError(result.response.status, result.error);
  }
  return result.data as T;
}

export function createTodoClient(baseUrl: string) {
  const api = createClient<paths>({ baseUrl });
  let session: { user: User; accessToken: string } | undefined;

  const bearer: Middleware = {
    onRequest({ request }) {
      if (session !== undefined) {
        request.headers.set("Authorization", `Bearer ${session.accessToken}`);
      }
      return request;
    },
  };
  api.use(bearer);

  function userId(): string {
    if (session === undefined) {
      throw new Error("log in first");
    }
    return session.user.id;
  }

  return {
    async signUp(email: string, password: string, name?: string): Promise<User> {
      const auth = unwrap(
        await api.POST("/api/auth/signup", {
          body: name === undefined ? { email, password } : { email, password, name },
        }),
      );
      session = { user: auth.user, accessToken: auth.access_token };
      return auth.user;
    },

    async logIn(email: string, password: string): Promise<User> {
      const auth = unwrap(await api.POST("/api/auth/login", { body: { email, password } }));
      session = { user: auth.user, accessToken: auth.access_token };
      return auth.user;
    },

    async listTasks(query: TaskQuery = {}): Promise<TaskPage> {
      return unwrap(
        await api.GET("/api/{user_id}/tasks", {
          params: { path: { user_id: userId() }, query },
        }),
      );
    },

    async createTask(task: NewTask): Promise<Task> {
      return unwrap(
        await api.POST("/api/{user_id}/tasks", {
          params: { path: { user_id: userId() } },
          body: task,
        }),
      );
    },

    async replaceTask(taskId: string, task: TaskReplacement): Promise<Task> {
      return unwrap(
        await api.PUT("/api/{user_id}/tasks/{task_id}", {
          params: { path: { user_id: userId(), task_id: taskId } },
          body: task,
        }),
      );
    },

    /** Without `completed`, toggles the task; with it, sets its state. */
    async completeTask(taskId: string, completed?: boolean): Promise<Task> {
      const params = { path: { user_id: userId(), task_id: taskId } };
      return unwrap(
        completed === undefined
          ? await api.PATCH("/api/{user_id}/tasks/{task_id}/complete", { params })
          : await api.PATCH("/api/{user_id}/tasks/{task_id}/complete", {
              params,
              body: { completed },
            }),
      );
    },

    async deleteTask(taskId: string): Promise<void> {
      unwrap(
        await api.DELETE("/api/{user_id}/tasks/{task_id}", {
          params: { path: { user_id: userId(), task_id: taskId } },
        }),
      );
    },
  };
}

export type TodoClient = ReturnType<typeof createTodoClient>;
