// Better Auth, in the browser: its routes are on this app's own origin (/api/auth/*), and the JWT
// plugin's client adds `authClient.token()`, which mints a JWT for the Todo API.
import { createAuthClient } from "better-auth/react";
import { jwtClient } from "better-auth/client/plugins";

export const authClient = createAuthClient({ plugins: [jwtClient()] });
