// Better Auth's routes: sign-up, sign-in, session, sign-out, /token (a JWT) and /jwks.
import { auth } from "@/lib/auth";

export const dynamic = "force-dynamic";

export function GET(request: Request): Promise<Response> {
  return auth().handler(request);
}

export function POST(request: Request): Promise<Response> {
  return auth().handler(request);
}
