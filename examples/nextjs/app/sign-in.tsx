"use client";

import { type FormEvent, useState } from "react";
import { authClient } from "@/lib/auth-client";

export default function SignIn() {
  const [mode, setMode] = useState<"in" | "up">("in");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const email = String(form.get("email"));
    const password = String(form.get("password"));
    setBusy(true);
    setError(null);
    const { error } =
      mode === "up"
        ? await authClient.signUp.email({ email, password, name: String(form.get("name") ?? "") })
        : await authClient.signIn.email({ email, password });
    setBusy(false);
    if (error) setError(error.message ?? error.statusText);
  }

  return (
    <main className="shell narrow">
      <h1>Todo</h1>
      <p className="muted">Next.js + Better Auth, on the Todo API.</p>
      <form className="card stack" onSubmit={submit} aria-label={mode === "up" ? "Sign up" : "Sign in"}>
        {mode === "up" && (
          <label>
            Name
            <input name="name" autoComplete="name" required />
          </label>
        )}
        <label>
          Email
          <input name="email" type="email" autoComplete="email" required />
        </label>
        <label>
          Password
          <input
            name="password"
            type="password"
            minLength={8}
            autoComplete={mode === "up" ? "new-password" : "current-password"}
            required
          />
        </label>
        {error && (
          <p className="notice error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy}>
          {mode === "up" ? "Create account" : "Sign in"}
        </button>
      </form>
      <p className="muted">
        {mode === "up" ? "Have an account? " : "New here? "}
        <button type="button" className="link" onClick={() => setMode(mode === "up" ? "in" : "up")}>
          {mode === "up" ? "Sign in" : "Create an account"}
        </button>
      </p>
    </main>
  );
}
