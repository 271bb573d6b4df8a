import type { NextConfig } from "next";

const config: NextConfig = {
  // The API's generated types and its event-stream reader live in ../../clients/typescript.
  experimental: { externalDir: true },
  // better-sqlite3 is a native module: Node loads it at run time, webpack leaves it alone.
  serverExternalPackages: ["better-sqlite3"],
  poweredByHeader: false,
};

export default config;
