/**
 * Better Auth, on the server: email and password accounts, stored in SQLite (better-sqlite3,
 * through Better Auth's built-in Kysely adapter), and the JWT plugin, whose tokens the Todo API
 * accepts (it fetches the public keys from `${BETTER_AUTH_URL}/api/auth/jwks`).
 *
 * Made on first use, not at import, so that `next build` neither opens the database nor needs the
 * secret.
 */
import Database from "better-sqlite3";
import { betterAuth, type BetterAuthOptions } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { jwt } from "better-auth/plugins";

function options(): BetterAuthOptions {
  if (!process.env.BETTER_AUTH_SECRET && process.env.NODE_ENV === "production") {
    throw new Error(
      "BETTER_AUTH_SECRET is not set: give the app a secret of its own, at least 32 random " +
        "characters (openssl rand -base64 32), in the environment or in .env.local",
    );
  }
  return {
    // The origin the browser uses: it is also the `iss` and `aud` of the JWTs, which the API
    // compares with its own BETTER_AUTH_URL.
    baseURL: process.env.BETTER_AUTH_URL ?? "http://localhost:3000",
    // BETTER_AUTH_SECRET is read from the environment.
    database: new Database(process.env.AUTH_DATABASE ?? "auth.db"),
    emailAndPassword: { enabled: true },
    plugins: [jwt()],
    telemetry: { enabled: false },
  };
}

let instance: ReturnType<typeof create> | undefined;

function create() {
  return betterAuth(options());
}

export function auth(): ReturnType<typeof create> {
  instance ??= create();
  return instance;
}

/** Creates or updates Better Auth's tables (user, session, account, verification, jwks). */
export async function migrate(): Promise<void> {
  const { runMigrations } = await getMigrations(auth().options);
  await runMigrations();
}
