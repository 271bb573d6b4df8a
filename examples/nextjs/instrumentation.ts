// Runs once when the server starts (`next start`, `next dev`): Better Auth's tables are created or
// brought up to date before the first request, so a fresh checkout needs no migration step. A
// server that cannot (no secret, a database it cannot open) stops here rather than serve errors.
export async function register(): Promise<void> {
  if (process.env.NEXT_RUNTIME === "nodejs") {
    const { migrate } = await import("./lib/auth");
    try {
      await migrate();
    } catch (error) {
      console.error(`Better Auth could not start: ${error instanceof Error ? error.message : error}`);
      process.exit(1);
    }
  }
}
