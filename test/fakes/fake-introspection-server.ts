// FAKE RFC 7662 introspection endpoint for the auth tests: a real HTTPS server (TLS 1.3) on
// 127.0.0.1:0 answering `POST /admin/oauth2/introspect` like Hydra, from a token table the test
// fills. Counts requests so tests can see singleflight and cache hits; can be made slow.
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";

/** What the fake answers for one token (RFC 7662 fields, Hydra's names). */
export interface FakeTokenInfo {
  readonly active: boolean;
  readonly scope?: string;
  readonly client_id?: string;
  readonly sub?: string;
  readonly exp?: number;
  readonly token_use?: string;
}

/** A running fake introspection server. */
export interface FakeIntrospectionServer {
  readonly url: string;
  readonly tokens: Map<string, FakeTokenInfo>;
  /** Requests received so far. */
  readonly requests: () => number;
  /** Delay before answering, milliseconds (for timeout tests). */
  delayMs: number;
  /** When set, answer every request with this HTTP status instead. */
  failWith: number | undefined;
  close(): Promise<void>;
}

/** Starts the fake on 127.0.0.1:0 with the given server certificate. */
export async function startFakeIntrospectionServer(tls: {
  cert: string;
  key: string;
}): Promise<FakeIntrospectionServer> {
  let count = 0;
  const tokens = new Map<string, FakeTokenInfo>();
  const timers = new Set<NodeJS.Timeout>();
  const state: { delayMs: number; failWith: number | undefined } = { delayMs: 0, failWith: undefined };
  const server: Server = createServer({ ...tls, minVersion: "TLSv1.3" }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.method !== "POST" || req.url !== "/admin/oauth2/introspect") {
        res.writeHead(404).end();
        return;
      }
      count++;
      const answer = (): void => {
        if (state.failWith !== undefined) {
          res
            .writeHead(state.failWith, { "content-type": "application/json" })
            .end('{"error":"server_error"}');
          return;
        }
        const form = new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
        const info = tokens.get(form.get("token") ?? "");
        const wanted = (form.get("scope") ?? "").split(" ").filter(Boolean);
        const granted = (info?.scope ?? "").split(" ");
        const body =
          info === undefined || !wanted.every((s) => granted.includes(s)) ? { active: false } : info;
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
      };
      if (state.delayMs > 0) {
        const t = setTimeout(() => {
          timers.delete(t);
          answer();
        }, state.delayMs);
        timers.add(t);
      } else answer();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `https://127.0.0.1:${port}`,
    tokens,
    requests: () => count,
    get delayMs() {
      return state.delayMs;
    },
    set delayMs(v: number) {
      state.delayMs = v;
    },
    get failWith() {
      return state.failWith;
    },
    set failWith(v: number | undefined) {
      state.failWith = v;
    },
    close: async () => {
      for (const t of timers) clearTimeout(t);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
