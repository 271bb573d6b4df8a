/**
 * The typed client against a live API (run by tests/test_openapi_contract.py): every route, a
 * token provider whose first token has expired, concurrent renewals, and this API's own accounts
 * renewed through /api/auth/refresh. It answers what happened; the Python test asserts on it.
 */
import {
  ApiError,
  createTodoClient,
  isPreconditionFailed,
  type Task,
  type TodoClient,
  type TokenProvider,
} from "../src/client.js";

export interface LiveInput {
  baseUrl: string;
  /** An account of the API, and two tokens for it: one already expired, one valid. */
  email: string;
  password: string;
  expiredToken: string;
  freshToken: string;
}

type Outcome<T> = { ok: true; value: T } | { ok: false; status: number; code: string };

async function outcome<T>(call: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await call() };
  } catch (error) {
    if (error instanceof ApiError) {
      return { ok: false, status: error.status, code: error.problem.code };
    }
    throw error;
  }
}

/** A provider that hands out `tokens` in turn and records each request's `forceRefresh`. */
function queued(...tokens: string[]): { provider: TokenProvider; calls: boolean[] } {
  const calls: boolean[] = [];
  const provider: TokenProvider = async ({ forceRefresh }) => {
    calls.push(forceRefresh);
    return tokens.shift() ?? null;
  };
  return { provider, calls };
}

async function until(done: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done() && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** What one `followChanges` saw: the titles (or deleted ids) in order, with their cursors. */
async function followed(
  todo: TodoClient,
  act: () => Promise<unknown>,
  expected: number,
  since?: string,
): Promise<{ seen: { what: string; cursor: string }[]; delayMs: number }> {
  const seen: { what: string; cursor: string }[] = [];
  const controller = new AbortController();
  let opened = false;
  const following = todo.followChanges({
    signal: controller.signal,
    ...(since === undefined ? {} : { since }),
    onOpen: () => (opened = true),
    onChange: (change, cursor) =>
      seen.push({ what: change.op === "upsert" ? change.task.title : change.id, cursor }),
  });
  await until(() => opened, 5000);
  const sent = Date.now();
  await act();
  await until(() => seen.length >= expected, 5000);
  const delayMs = Date.now() - sent;
  await new Promise((resolve) => setTimeout(resolve, 200)); // nothing more comes
  controller.abort();
  await following;
  return { seen, delayMs };
}

export async function run(input: LiveInput) {
  const { baseUrl } = input;

  // Every route, with a provider whose first token has expired.
  const tokens = queued(input.expiredToken, input.freshToken);
  const todo = createTodoClient({ baseUrl, token: tokens.provider });
  const firstList = await todo.listTasks();
  const callsAfterFirstList = [...tokens.calls];
  const me = await todo.me();
  const userId = await todo.userId();
  const created = await todo.createTask({
    title: "Buy milk",
    priority: "high",
    due_date: "2026-12-01",
  });
  const fetched = await todo.getTask(created.id);
  const replaced = await todo.replaceTask(created.id, { title: "Buy oat milk" });
  const patched = await todo.patchTask(created.id, { priority: "high", description: "Two litres" });
  const toggled = await todo.completeTask(created.id);
  const reopened = await todo.completeTask(created.id, false);
  const pending = await todo.listTasks({ status: "pending", sort: "title", limit: 5 });
  await todo.deleteTask(created.id);
  const deletedAgain = await outcome(() => todo.deleteTask(created.id));
  const missing = await outcome(() => todo.getTask(created.id));
  const invalid = await outcome(() => todo.createTask({ title: "   " }));
  const jwks = await todo.jwks();
  const health = await todo.health();
  const ready = await todo.ready();

  // Safe retries: a create sent twice with its key is one task, a toggle sent twice one toggle,
  // and the key of another request is refused.
  const createKey = crypto.randomUUID();
  const once = await todo.createTask({ title: "Only once" }, { idempotencyKey: createKey });
  const again = await todo.createTask({ title: "Only once" }, { idempotencyKey: createKey });
  const toggleKey = crypto.randomUUID();
  await todo.completeTask(once.id, undefined, { idempotencyKey: toggleKey });
  const toggledTwice = await todo.completeTask(once.id, undefined, { idempotencyKey: toggleKey });
  const reusedKey = await outcome(() =>
    todo.createTask({ title: "Another" }, { idempotencyKey: createKey }),
  );
  const afterRetries = await todo.listTasks();
  const safeRetries = {
    sameTask: again.id === once.id,
    tasks: afterRetries.total,
    completedAfterTwoToggles: toggledTwice.completed,
    reusedKey,
  };

  // Edits with If-Match: one made from a stale version is refused with the task as it is now.
  const fresh = await todo.patchTask(once.id, { title: "Mine" }, { ifMatch: toggledTwice.version });
  let current: number | null = null;
  try {
    await todo.patchTask(once.id, { title: "Stale" }, { ifMatch: toggledTwice.version });
  } catch (error) {
    if (isPreconditionFailed(error)) {
      current = error.problem.current.version;
    }
  }
  // The changes feed and the trash: a full sync, a deletion seen as such, a restore.
  const full = await todo.listChanges();
  await todo.deleteTask(once.id, { ifMatch: fresh.version });
  const afterDelete = await todo.listChanges(full.next);
  const trash = await todo.listTrash();
  const restored = await todo.restoreTask(once.id);
  await todo.deleteTask(once.id);
  await todo.purgeTrash();
  const sync = {
    staleEditRefusedWithVersion: current,
    freshVersion: fresh.version,
    fullSync: full.changes.map((change) => change.op),
    afterDelete: afterDelete.changes,
    trashed: trash.items.map((task) => task.id),
    restoredVersion: restored.version,
    emptyTrash: (await todo.listTrash()).total,
  };

  // Live updates: a change pushed as it commits; then, resumed from the last cursor after a
  // change made while nobody followed, exactly that change.
  const pushedTasks: Task[] = [];
  const pushed = await followed(
    todo,
    async () => pushedTasks.push(await todo.createTask({ title: "Pushed" })),
    1,
  );
  pushedTasks.push(await todo.createTask({ title: "While away" }));
  const resumed = await followed(
    todo,
    async () => pushedTasks.push(await todo.createTask({ title: "Back" })),
    2,
    pushed.seen.at(-1)?.cursor,
  );
  for (const task of pushedTasks) {
    await todo.deleteTask(task.id);
  }
  await todo.purgeTrash();
  const live = {
    pushed: pushed.seen.map((event) => event.what),
    delayMs: pushed.delayMs,
    resumed: resumed.seen.map((event) => event.what),
  };

  const everyRoute = {
    firstList: { total: firstList.total, limit: firstList.limit },
    callsAfterFirstList,
    calls: tokens.calls,
    me,
    userId,
    created,
    fetched,
    replaced,
    patched,
    toggled,
    reopened,
    pending: { total: pending.total, ids: pending.items.map((task) => task.id) },
    deletedAgain,
    missing,
    invalid,
    jwksKeys: jwks.keys.length,
    health,
    ready,
  };

  // Three requests at once with an expired token: one renewal serves them all.
  const concurrent = queued(input.expiredToken, input.freshToken);
  const together = createTodoClient({ baseUrl, token: concurrent.provider });
  const answers = await Promise.all([
    together.listTasks(),
    together.me(),
    together.listTasks({ status: "completed" }),
  ]);

  // A renewed token that has expired too: the request is sent again once, then fails.
  const stale = queued(input.expiredToken, input.expiredToken, input.freshToken);
  const staleClient = createTodoClient({ baseUrl, token: stale.provider });
  const twiceExpired = await outcome(() => staleClient.listTasks());

  // This API's own accounts, without a provider: an expired token is renewed by a refresh. A
  // fetch stands in for the clock: it swaps the first bearer token for the expired one.
  let swapped = false;
  const requests: string[] = [];
  const swapping = async (request: Request): Promise<Response> => {
    requests.push(`${request.method} ${new URL(request.url).pathname}`);
    if (!swapped && request.headers.has("Authorization")) {
      swapped = true;
      const headers = new Headers(request.headers);
      headers.set("Authorization", `Bearer ${input.expiredToken}`);
      return fetch(new Request(request, { headers }));
    }
    return fetch(request);
  };
  const own = createTodoClient({ baseUrl, fetch: swapping });
  const loggedIn = await own.logIn(input.email, input.password);
  const ownList = await own.listTasks();
  const newPassword = `${input.password}-changed`;
  const changed = await own.changePassword(input.password, newPassword);
  const meAfterChange = await own.me();
  const refreshed = await own.refresh();
  await own.logOut();
  const meAfterLogout = await outcome(() => own.me());
  await own.logIn(input.email, newPassword);
  await own.logOutAll();
  const wrongPassword = await outcome(() => own.logIn(input.email, input.password));

  const newcomer = createTodoClient({ baseUrl });
  const signedUp = await newcomer.signUp(`new-${Date.now()}@example.com`, "a fine first password");
  const newcomerTask = await newcomer.createTask({ title: "First task" });
  const profile = await newcomer.updateProfile({ name: "New Comer", time_zone: "Europe/Paris" });
  // Organizing: tags, the user's own order, a view of the day.
  const first = await newcomer.createTask({ title: "Second task", tags: ["Work", "home"] });
  const moved = await newcomer.moveTask(first.id, { after: newcomerTask.id }, { ifMatch: 1 });
  const ordered = await newcomer.listTasks({ sort: "position", tag: ["work", "HOME"] });
  const byPosition = await newcomer.listTasks({ sort: "position" });
  const today = await newcomer.listTasks({ view: "no_date", tz: "Pacific/Kiritimati" });
  const tags = await newcomer.listTags();
  const exported = await newcomer.exportData();
  await newcomer.forgotPassword(`nobody-${Date.now()}@example.com`);
  const badReset = await outcome(() => newcomer.resetPassword("not-a-token", "another passphrase"));
  const wrongDeletion = await outcome(() => newcomer.deleteAccount("not the password"));
  await newcomer.deleteAccount("a fine first password");
  const afterDeletion = await outcome(() =>
    createTodoClient({ baseUrl }).logIn(signedUp.user.email ?? "", "a fine first password"),
  );

  return {
    everyRoute,
    safeRetries,
    sync,
    live,
    concurrent: { calls: concurrent.calls, userIds: [answers[1].id] },
    twiceExpired: { outcome: twiceExpired, calls: stale.calls },
    own: {
      userId: loggedIn.user.id,
      listed: ownList.total,
      requests,
      changedUser: changed.user.id,
      meAfterChange: meAfterChange.id,
      refreshedUser: refreshed.user.id,
      meAfterLogout,
      wrongPassword,
    },
    newcomer: {
      userId: signedUp.user.id,
      taskOwner: newcomerTask.user_id,
      profile: { name: profile.name, timeZone: profile.time_zone },
      exported: { format: exported.format, tasks: exported.tasks.map((task) => task.id) },
      organizing: {
        movedVersion: moved.version,
        tagged: ordered.items.map((task) => task.title),
        order: byPosition.items.map((task) => task.title),
        noDate: today.total,
        tags,
      },
      badReset,
      wrongDeletion,
      afterDeletion,
    },
  };
}
