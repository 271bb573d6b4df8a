"use client";

import { type DragEvent, type FormEvent, useCallback, useEffect, useMemo, useRef, useState } from "react";
import {
  ConflictError,
  type Priority,
  type TagCount,
  type Task,
  type TaskPatch,
  type TaskQuery,
  type TaskStatus,
  type TaskView,
  type TrashedTask,
  createApi,
  tokenSource,
  uuid,
} from "@/lib/api";
import { authClient } from "@/lib/auth-client";

const STATUSES: { value: TaskStatus; label: string }[] = [
  { value: "all", label: "All" },
  { value: "pending", label: "Pending" },
  { value: "completed", label: "Completed" },
];
const VIEWS: { value: TaskView | ""; label: string }[] = [
  { value: "", label: "Any date" },
  { value: "today", label: "Today" },
  { value: "overdue", label: "Overdue" },
  { value: "upcoming", label: "Upcoming" },
  { value: "no_date", label: "No date" },
];
const PRIORITIES: Priority[] = ["low", "medium", "high"];

interface Filters {
  status: TaskStatus;
  view: TaskView | "";
  tag: string;
  q: string;
}

interface Notice {
  kind: "conflict" | "error";
  text: string;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function tagsOf(text: string): string[] {
  return text
    .split(",")
    .map((tag) => tag.trim())
    .filter((tag) => tag !== "");
}

export default function Tasks(props: {
  apiUrl: string;
  userId: string;
  email: string;
  onSignOut: () => void;
}) {
  const { apiUrl, userId } = props;
  const api = useMemo(
    () => createApi(apiUrl, userId, tokenSource(async () => (await authClient.token()).data?.token ?? null)),
    [apiUrl, userId],
  );
  const [tab, setTab] = useState<"tasks" | "trash">("tasks");
  const [filters, setFilters] = useState<Filters>({ status: "all", view: "", tag: "", q: "" });
  const [tasks, setTasks] = useState<Task[]>([]);
  const [tags, setTags] = useState<TagCount[]>([]);
  const [trash, setTrash] = useState<TrashedTask[]>([]);
  const [trashTotal, setTrashTotal] = useState(0);
  const [loaded, setLoaded] = useState(false);
  const [live, setLive] = useState(false);
  const [notice, setNotice] = useState<Notice | null>(null);
  const [editing, setEditing] = useState<Task | null>(null);
  const [dragged, setDragged] = useState<string | null>(null);
  const tasksRef = useRef(tasks);
  tasksRef.current = tasks;

  // --- Reading ----------------------------------------------------------------------------------

  const query = useMemo<TaskQuery>(
    () => ({
      sort: "position",
      limit: 100,
      status: filters.status,
      ...(filters.view === "" ? {} : { view: filters.view }),
      ...(filters.tag === "" ? {} : { tag: [filters.tag] }),
      ...(filters.q.trim() === "" ? {} : { q: filters.q.trim() }),
    }),
    [filters],
  );

  // Answers may come back out of order: only the latest request's answer is shown.
  const latest = useRef(0);
  const refresh = useCallback(async () => {
    const request = ++latest.current;
    try {
      const [page, tagCounts, trashed] = await Promise.all([
        api.listTasks(query),
        api.listTags(),
        api.listTrash(),
      ]);
      if (request !== latest.current) return;
      setTasks(page.items);
      setTags(tagCounts);
      setTrash(trashed.items);
      setTrashTotal(trashed.total);
      setLoaded(true);
    } catch (error) {
      if (request === latest.current) setNotice({ kind: "error", text: messageOf(error) });
    }
  }, [api, query]);
  const refreshRef = useRef(refresh);
  refreshRef.current = refresh;

  useEffect(() => {
    void refresh();
  }, [refresh]);

  // Live: every change to this user's tasks, from any tab or device, reloads what is shown. On
  // each (re)connection the lists are read again, so nothing before the stream opened is missed.
  useEffect(() => {
    const stop = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const soon = () => {
      clearTimeout(timer);
      timer = setTimeout(() => void refreshRef.current(), 30);
    };
    void api.followChanges({
      signal: stop.signal,
      onOpen: () => {
        setLive(true);
        soon();
      },
      onChange: soon,
      onReset: soon,
    });
    return () => {
      clearTimeout(timer);
      stop.abort();
      setLive(false);
    };
  }, [api]);

  // --- Writing, optimistically ------------------------------------------------------------------

  /** Puts a task in the list in place of its older copy (a later version is never replaced). */
  const put = (next: Task) =>
    setTasks((all) => all.map((task) => (task.id === next.id && next.version >= task.version ? next : task)));

  function failed(error: unknown) {
    if (error instanceof ConflictError) {
      put(error.current);
      setNotice({
        kind: "conflict",
        text:
          `Conflict: “${error.current.title}” was changed in another tab or device since you saw it. ` +
          "Your change was not saved; the task now shows its latest version.",
      });
    } else {
      setNotice({ kind: "error", text: messageOf(error) });
    }
    void refresh();
  }

  /** Shows `optimistic` at once, sends the change, then shows the server's answer. */
  async function change(optimistic: Task, send: () => Promise<Task>) {
    put(optimistic);
    try {
      put(await send());
    } catch (error) {
      failed(error);
    }
  }

  async function create(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const formElement = event.currentTarget;
    const form = new FormData(formElement);
    const title = String(form.get("title")).trim();
    if (title === "") return;
    const due = String(form.get("due_date"));
    const now = new Date().toISOString();
    const task = {
      id: uuid(),
      title,
      priority: String(form.get("priority")) as Priority,
      due_date: due === "" ? null : due,
      tags: tagsOf(String(form.get("tags"))),
    };
    formElement.reset();
    // Shown first, with the id the server will give it (the client chooses it).
    const shown: Task = {
      ...task,
      user_id: userId,
      description: null,
      completed: false,
      completed_at: null,
      created_at: now,
      updated_at: now,
      position: "",
      version: 0,
    };
    setTasks((all) => [shown, ...all]);
    try {
      put(await api.createTask(task));
    } catch (error) {
      setTasks((all) => all.filter((other) => other.id !== task.id));
      failed(error);
    }
  }

  const complete = (task: Task) =>
    change({ ...task, completed: !task.completed }, () => api.completeTask(task, !task.completed));

  async function remove(task: Task) {
    setTasks((all) => all.filter((other) => other.id !== task.id));
    try {
      await api.deleteTask(task);
    } catch (error) {
      failed(error);
    }
  }

  async function restore(task: TrashedTask) {
    setTrash((all) => all.filter((other) => other.id !== task.id));
    setTrashTotal((total) => total - 1);
    try {
      await api.restoreTask(task.id);
      void refresh();
    } catch (error) {
      failed(error);
    }
  }

  /** Saves an edit made on `base`, the version the editor opened: a 412 if it changed since. */
  function save(base: Task, patch: TaskPatch) {
    setEditing(null);
    if (Object.keys(patch).length === 0) return;
    const shown = tasksRef.current.find((task) => task.id === base.id) ?? base;
    void change({ ...shown, ...patch } as Task, () => api.patchTask(base, patch));
  }

  // --- Reordering by drag and drop (POST …/move) ------------------------------------------------

  function drop(event: DragEvent, target: Task) {
    event.preventDefault();
    const moving = tasksRef.current.find((task) => task.id === dragged);
    setDragged(null);
    if (moving === undefined || moving.id === target.id) return;
    const order = tasksRef.current.filter((task) => task.id !== moving.id);
    const from = tasksRef.current.indexOf(moving);
    const to = tasksRef.current.indexOf(target);
    const where = from < to ? { after: target.id } : { before: target.id };
    order.splice(order.indexOf(target) + (from < to ? 1 : 0), 0, moving);
    setTasks(order);
    void change(moving, () => api.moveTask(moving, where));
  }

  // --- The page ---------------------------------------------------------------------------------

  return (
    <main className="shell">
      <header className="bar">
        <h1>Todo</h1>
        <span className={live ? "live on" : "live"} data-testid="live" data-live={live}>
          {live ? "● Live" : "○ Connecting…"}
        </span>
        <span className="spacer" />
        <span className="muted" data-testid="who">
          {props.email}
        </span>
        <button type="button" onClick={props.onSignOut}>
          Sign out
        </button>
      </header>

      {notice && (
        <div className={`notice ${notice.kind}`} role="alert" data-testid="notice">
          <span>{notice.text}</span>
          <button type="button" className="link" onClick={() => setNotice(null)}>
            Dismiss
          </button>
        </div>
      )}

      <nav className="tabs">
        <button type="button" aria-pressed={tab === "tasks"} onClick={() => setTab("tasks")}>
          Tasks
        </button>
        <button type="button" aria-pressed={tab === "trash"} onClick={() => setTab("trash")}>
          Trash ({trashTotal})
        </button>
      </nav>

      {tab === "tasks" ? (
        <>
          <form className="card row" onSubmit={create} aria-label="New task">
            <input name="title" placeholder="What needs doing?" aria-label="Title" maxLength={200} required />
            <select name="priority" aria-label="Priority" defaultValue="medium">
              {PRIORITIES.map((priority) => (
                <option key={priority}>{priority}</option>
              ))}
            </select>
            <input name="due_date" type="date" aria-label="Due date" />
            <input name="tags" placeholder="tags, comma-separated" aria-label="Tags" />
            <button type="submit" className="primary">
              Add
            </button>
          </form>

          <section className="filters" aria-label="Filters">
            <div className="segmented" role="group" aria-label="Status">
              {STATUSES.map(({ value, label }) => (
                <button
                  key={value}
                  type="button"
                  aria-pressed={filters.status === value}
                  onClick={() => setFilters({ ...filters, status: value })}
                >
                  {label}
                </button>
              ))}
            </div>
            <select
              aria-label="View"
              value={filters.view}
              onChange={(event) => setFilters({ ...filters, view: event.target.value as TaskView | "" })}
            >
              {VIEWS.map(({ value, label }) => (
                <option key={value} value={value}>
                  {label}
                </option>
              ))}
            </select>
            <input
              type="search"
              placeholder="Search"
              aria-label="Search"
              value={filters.q}
              onChange={(event) => setFilters({ ...filters, q: event.target.value })}
            />
            <div className="chips" aria-label="Tags">
              {tags.map((tag) => (
                <button
                  key={tag.name}
                  type="button"
                  className="chip"
                  aria-pressed={filters.tag === tag.name}
                  onClick={() => setFilters({ ...filters, tag: filters.tag === tag.name ? "" : tag.name })}
                >
                  #{tag.name} <small>{tag.count}</small>
                </button>
              ))}
            </div>
          </section>

          <ul className="tasks" data-testid="tasks">
            {tasks.map((task) =>
              editing?.id === task.id ? (
                <Editor key={task.id} base={editing} onSave={save} onCancel={() => setEditing(null)} />
              ) : (
                <li
                  key={task.id}
                  data-testid="task"
                  data-version={task.version}
                  className={[task.completed ? "done" : "", dragged === task.id ? "dragging" : ""].join(" ")}
                  draggable
                  onDragStart={(event) => {
                    event.dataTransfer.effectAllowed = "move";
                    event.dataTransfer.setData("text/plain", task.id);
                    setDragged(task.id);
                  }}
                  onDragEnd={() => setDragged(null)}
                  onDragOver={(event) => event.preventDefault()}
                  onDrop={(event) => drop(event, task)}
                >
                  <span className="grip" aria-hidden>
                    ⠿
                  </span>
                  <input
                    type="checkbox"
                    checked={task.completed}
                    aria-label={`Complete ${task.title}`}
                    onChange={() => void complete(task)}
                  />
                  <div className="body">
                    <span className="title">{task.title}</span>
                    {task.description && <span className="muted">{task.description}</span>}
                    <span className="meta">
                      <span className={`priority ${task.priority}`}>{task.priority}</span>
                      {task.due_date && <span>due {task.due_date}</span>}
                      {task.tags.map((tag) => (
                        <span key={tag} className="tag">
                          #{tag}
                        </span>
                      ))}
                    </span>
                  </div>
                  <button type="button" onClick={() => setEditing(task)}>
                    Edit
                  </button>
                  <button type="button" className="danger" onClick={() => void remove(task)}>
                    Delete
                  </button>
                </li>
              ),
            )}
          </ul>
          {loaded && tasks.length === 0 && <p className="muted empty">Nothing here.</p>}
          <p className="muted hint">Drag a task to reorder. Changes in other tabs appear here as they happen.</p>
        </>
      ) : (
        <ul className="tasks" data-testid="trash">
          {trash.map((task) => (
            <li key={task.id} data-testid="trashed">
              <div className="body">
                <span className="title">{task.title}</span>
                <span className="meta">deleted {new Date(task.deleted_at).toLocaleString()}</span>
              </div>
              <button type="button" onClick={() => void restore(task)}>
                Restore
              </button>
            </li>
          ))}
          {loaded && trash.length === 0 && <p className="muted empty">The trash is empty.</p>}
        </ul>
      )}
    </main>
  );
}

/** Edits a task as it was when the editor opened (`base`): saving sends If-Match with its version. */
function Editor(props: { base: Task; onSave: (base: Task, patch: TaskPatch) => void; onCancel: () => void }) {
  const { base } = props;

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const title = String(form.get("title")).trim();
    const description = String(form.get("description")).trim() || null;
    const priority = String(form.get("priority")) as Priority;
    const due = String(form.get("due_date")) || null;
    const tags = tagsOf(String(form.get("tags")));
    const patch: TaskPatch = {
      ...(title !== base.title ? { title } : {}),
      ...(description !== base.description ? { description } : {}),
      ...(priority !== base.priority ? { priority } : {}),
      ...(due !== base.due_date ? { due_date: due } : {}),
      ...(tags.join(",") !== base.tags.join(",") ? { tags } : {}),
    };
    props.onSave(base, patch);
  }

  return (
    <li className="editing" data-testid="editor">
      <form className="stack" onSubmit={submit} aria-label={`Edit ${base.title}`}>
        <input name="title" defaultValue={base.title} aria-label="Title" maxLength={200} required />
        <textarea name="description" defaultValue={base.description ?? ""} aria-label="Description" rows={2} />
        <div className="row">
          <select name="priority" defaultValue={base.priority} aria-label="Priority">
            {PRIORITIES.map((priority) => (
              <option key={priority}>{priority}</option>
            ))}
          </select>
          <input name="due_date" type="date" defaultValue={base.due_date ?? ""} aria-label="Due date" />
          <input name="tags" defaultValue={base.tags.join(", ")} aria-label="Tags" />
          <span className="spacer" />
          <button type="button" onClick={props.onCancel}>
            Cancel
          </button>
          <button type="submit" className="primary">
            Save
          </button>
        </div>
      </form>
    </li>
  );
}
