import Home from "./home";

// Read at each request, not at build time: one build runs against any API.
export const dynamic = "force-dynamic";

export default function Page() {
  return <Home apiUrl={process.env.TODO_API_URL ?? "http://127.0.0.1:8000"} />;
}
