/** How a frontend uses the client: with this API's own accounts, and with Better Auth. */
import { ApiError, createTodoClient, type NewTask, type Task, type TodoClient } from "./client";

/** Log in (or sign up), add a task, list what is still to do. */
export async function example(baseUrl: string): Promise<string[]> {
  const todo = createTodoClient({ baseUrl });
  try {
    await todo.logIn("ada@example.com", "correct horse battery staple");
  } catch (error) {
    if (error instanceof ApiError && error.problem.code === "invalid_credentials") {
      await todo.signUp("ada@example.com", "correct horse battery staple", "Ada Lovelace");
    } else {
      throw error;
    }
  }
  const task = await todo.createTask({ title: "Buy milk", priority: "high", due_date: "2026-12-01" });
  await todo.completeTask(task.id, false);
  const page = await todo.listTasks({ status: "pending", sort: "due_date", limit: 50 });
  return page.items.map((item) => `${item.title} (${item.priority}, due ${item.due_date ?? "-"})`);
}

/**
 * A retry with a key: one `Idempotency-Key` for the task, whatever befalls the first attempts (a
 * timeout, a lost connection, a 5xx), so it is created once, and every attempt that gets an
 * answer gets the same task.
 */
export async function createWithRetries(todo: TodoClient, task: NewTask): Promise<Task> {
  const idempotencyKey = crypto.randomUUID();
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await todo.createTask(task, { idempotencyKey });
    } catch (error) {
      // Worth sending again: no answer (the network), a 5xx, or the first attempt still running.
      const again =
        !(error instanceof ApiError) ||
        error.status >= 500 ||
        error.problem.code === "idempotency_key_in_progress";
      if (!again || attempt === 3) {
        throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000 * attempt));
    }
  }
}

/** The shape of Better Auth's `authClient.token()` (from its `jwtClient()` plugin). */
interface BetterAuthTokenSource {
  token(): Promise<{ data: { token: string } | null }>;
}

/** A Better Auth user: each `authClient.token()` call mints a fresh JWT, so it is the provider. */
export async function betterAuthExample(baseUrl: string, authClient: BetterAuthTokenSource) {
  const todo = createTodoClient({
    baseUrl,
    token: async () => (await authClient.token()).data?.token ?? null,
  });
  return todo.listTasks({ status: "pending" });
}
