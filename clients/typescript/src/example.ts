/** How a frontend uses the client: log in, add a task, list what is still to do. */
import { ApiError, createTodoClient } from "./client";

export async function example(baseUrl: string): Promise<string[]> {
  const todo = createTodoClient(baseUrl);
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
