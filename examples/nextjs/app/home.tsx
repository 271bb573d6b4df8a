"use client";

import { authClient } from "@/lib/auth-client";
import SignIn from "./sign-in";
import Tasks from "./tasks";

export default function Home({ apiUrl }: { apiUrl: string }) {
  const { data: session, isPending } = authClient.useSession();
  if (isPending) {
    return <main className="shell">Loading…</main>;
  }
  if (session === null) {
    return <SignIn />;
  }
  return (
    <Tasks
      key={session.user.id}
      apiUrl={apiUrl}
      userId={session.user.id}
      email={session.user.email}
      onSignOut={() => void authClient.signOut()}
    />
  );
}
