// A real Better Auth server for the Todo API's interoperability tests (tests/test_better_auth.py).
//
// Better Auth with the JWT plugin, email-and-password sign-up and the in-memory adapter (no
// database), served by `toNodeHandler` on 127.0.0.1 only.
//
//   node server.mjs [--port N] [--base-url URL] [--alg EdDSA|ES256|ES512|RS256|PS256]
//                   [--expiration-time 15m] [--issuer ISS] [--audience AUD]
//                   [--rotation-interval SECONDS] [--grace-period SECONDS]
//   env: BA_PORT, BA_BASE_URL, BA_ALG, BA_EXPIRATION_TIME, BA_ISSUER, BA_AUDIENCE,
//        BA_ROTATION_INTERVAL, BA_GRACE_PERIOD, BA_SECRET
//
// or, to run several independent servers (own port, keys and users) in one process:
//
//   node server.mjs --instances '[{"name": "a", "alg": "ES256"}, {"name": "b", ...}]'
//
// where each object takes the keys port, baseURL, alg, expirationTime, issuer, audience,
// rotationInterval and gracePeriod (the JWT plugin's `jwks` options of those names, in seconds).
//
// Port 0 (the default) lets the system choose a free port; the base URL defaults to
// http://127.0.0.1:<port>. The issuer and audience default to the base URL (Better Auth's own
// default); a comma in the audience makes it a list, which Better Auth also supports. A negative
// expiration time mints tokens that are already expired (write it with "=" so that it is not taken
// for an option: --expiration-time=-1h). When a server is ready it prints one JSON line to stdout:
// {"ready": true, "name": ..., "port": ..., "baseURL": ..., "alg": ...}.
//
// Test-only endpoints, outside Better Auth's /api/auth:
//   POST /test/rotate-key   adds a new signing key (what `jwks.rotationInterval` does when the
//                           newest key expires): new tokens use it, the old key stays published.
//   POST /test/withdraw-key?kid=KID
//                           removes that key from the key store (what an operator does with a
//                           compromised key): the JWKS no longer lists it.
//   POST /test/verify-email?email=EMAIL
//                           marks the user's email as verified (what a verification link does).
//   GET  /test/stats        {"jwksRequests": n}: how often the JWKS was served.

import { randomBytes } from "node:crypto";
import http from "node:http";
import { parseArgs } from "node:util";

import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { createJwk, jwt } from "better-auth/plugins/jwt";

const ALGORITHMS = ["EdDSA", "ES256", "ES512", "RS256", "PS256"];

function json(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

function startServer({
  name = "better-auth",
  port = 0,
  baseURL,
  alg = "EdDSA",
  expirationTime = "15m",
  issuer,
  audience,
  rotationInterval,
  gracePeriod,
  secret,
}) {
  if (!ALGORITHMS.includes(alg)) {
    throw new Error(`unknown algorithm ${alg}; choose one of ${ALGORITHMS.join(", ")}`);
  }
  let jwksRequests = 0;
  let auth = null;
  let handleAuth = null;
  let jwtOptions = null;
  const store = { user: [], session: [], account: [], verification: [], jwks: [] };

  const server = http.createServer(async (req, res) => {
    try {
      const path = new URL(req.url, "http://127.0.0.1").pathname;
      if (path === "/test/rotate-key" && req.method === "POST") {
        const key = await createJwk({ context: await auth.$context }, jwtOptions);
        return json(res, 200, { kid: key.id });
      }
      if (path === "/test/withdraw-key" && req.method === "POST") {
        const kid = new URL(req.url, "http://127.0.0.1").searchParams.get("kid");
        const index = store.jwks.findIndex((key) => key.id === kid);
        if (index < 0) return json(res, 404, { error: `no key ${kid}` });
        store.jwks.splice(index, 1);
        return json(res, 200, { kid });
      }
      if (path === "/test/verify-email" && req.method === "POST") {
        const email = new URL(req.url, "http://127.0.0.1").searchParams.get("email");
        const user = store.user.find((candidate) => candidate.email === email);
        if (!user) return json(res, 404, { error: `no user ${email}` });
        user.emailVerified = true;
        return json(res, 200, { email });
      }
      if (path === "/test/stats" && req.method === "GET") {
        return json(res, 200, { jwksRequests });
      }
      if (path === "/api/auth/jwks") jwksRequests += 1;
      return await handleAuth(req, res);
    } catch (error) {
      console.error(error);
      if (!res.headersSent) json(res, 500, { error: String(error) });
      else res.end();
    }
  });

  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(port), "127.0.0.1", () => {
      const actualPort = server.address().port;
      const origin = (baseURL ?? `http://127.0.0.1:${actualPort}`).replace(/\/+$/, "");
      const audiences = audience?.includes(",") ? audience.split(",") : audience;
      jwtOptions = {
        jwks: {
          keyPairConfig: alg === "EdDSA" ? { alg, crv: "Ed25519" } : { alg },
          ...(rotationInterval ? { rotationInterval: Number(rotationInterval) } : {}),
          ...(gracePeriod ? { gracePeriod: Number(gracePeriod) } : {}),
        },
        jwt: {
          expirationTime,
          ...(issuer ? { issuer } : {}),
          ...(audiences ? { audience: audiences } : {}),
        },
      };
      auth = betterAuth({
        baseURL: origin,
        secret: secret ?? randomBytes(32).toString("base64url"),
        database: memoryAdapter(store),
        emailAndPassword: { enabled: true },
        plugins: [jwt(jwtOptions)],
        rateLimit: { enabled: false },
        telemetry: { enabled: false },
      });
      handleAuth = toNodeHandler(auth);
      resolve({ server, line: { ready: true, name, port: actualPort, baseURL: origin, alg } });
    });
  });
}

const { values: args } = parseArgs({
  options: {
    instances: { type: "string" },
    port: { type: "string" },
    "base-url": { type: "string" },
    alg: { type: "string" },
    "expiration-time": { type: "string" },
    issuer: { type: "string" },
    audience: { type: "string" },
    "rotation-interval": { type: "string" },
    "grace-period": { type: "string" },
  },
});
const env = process.env;
const configs = args.instances
  ? JSON.parse(args.instances)
  : [
      {
        port: args.port ?? env.BA_PORT,
        baseURL: args["base-url"] ?? env.BA_BASE_URL,
        alg: args.alg ?? env.BA_ALG,
        expirationTime: args["expiration-time"] ?? env.BA_EXPIRATION_TIME,
        issuer: args.issuer ?? env.BA_ISSUER,
        audience: args.audience ?? env.BA_AUDIENCE,
        rotationInterval: args["rotation-interval"] ?? env.BA_ROTATION_INTERVAL,
        gracePeriod: args["grace-period"] ?? env.BA_GRACE_PERIOD,
      },
    ];

try {
  const started = await Promise.all(
    configs.map((config) => startServer({ secret: env.BA_SECRET, ...config })),
  );
  for (const { line } of started) console.log(JSON.stringify(line));
  const stop = () => {
    for (const { server } of started) {
      server.close();
      server.closeAllConnections();
    }
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
} catch (error) {
  console.error(error);
  process.exit(2);
}
