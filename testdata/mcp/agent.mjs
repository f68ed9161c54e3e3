// An MCP agent driven by the official TypeScript client, for rulelock's
// end-to-end tests (cmd/rulelock/mcp_e2e_test.go). It connects to rulelock
// over stdio or streamable HTTP exactly as it would to the filesystem
// server, runs a fixed scenario and prints one JSON line per step.
//
//   node agent.mjs stdio <command> [args...]
//   node agent.mjs http <url> <bearer token>
//
// SANDBOX and ROOT name the directories the scenario reads from.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [mode, ...rest] = process.argv.slice(2);
const SANDBOX = process.env.SANDBOX;
const ROOT = process.env.ROOT;

let transport;
if (mode === "stdio") {
  transport = new StdioClientTransport({ command: rest[0], args: rest.slice(1), stderr: "inherit", env: process.env });
} else if (mode === "http") {
  transport = new StreamableHTTPClientTransport(new URL(rest[0]), {
    requestInit: { headers: { Authorization: `Bearer ${rest[1]}` } },
  });
} else {
  console.error("usage: agent.mjs stdio CMD [ARGS...] | http URL TOKEN");
  process.exit(2);
}

const client = new Client({ name: "e2e-agent", version: "1.0.0" });
await client.connect(transport);

function out(step, v) {
  console.log(JSON.stringify({ step, ...v }));
}

async function call(step, name, args, opts = {}) {
  try {
    const r = await client.callTool({ name, arguments: args, _meta: opts.meta }, undefined, opts.request);
    const text = (r.content || []).filter((c) => c.type === "text").map((c) => c.text).join("");
    out(step, { isError: !!r.isError, text, structured: r.structuredContent ?? null, meta: r._meta ?? null });
  } catch (e) {
    out(step, { error: { code: e.code ?? null, message: String(e.message) } });
  }
}

const tools = await client.listTools();
out("list", { tools: tools.tools.map((t) => t.name).sort() });

const meta = { "io.rulelock/instruction": "summarise hello.txt", "io.rulelock/reasoning": "the user asked for a summary" };
await call("read", "fs.read_text_file", { path: `${SANDBOX}/hello.txt` }, { meta });
await call("write", "fs.write_file", { path: `${SANDBOX}/hello.txt`, content: "overwritten by the agent" });
await call("traversal", "fs.read_text_file", { path: `${SANDBOX}/../outside.txt` });
await call("sibling", "fs.read_text_file", { path: `${ROOT}/sandbox_evil/x.txt` });
await call("symlink", "fs.read_text_file", { path: `${SANDBOX}/link.txt` });
await call("secret", "fs.read_text_file", { path: `${SANDBOX}/secret.txt` });
await call("extra", "fs.read_text_file", { path: `${SANDBOX}/hello.txt`, follow: true });
await call("unknown", "fs.delete_everything", {});

// Needs two approvers: the test approves while the call waits, and the
// agent sees progress notifications meanwhile.
let progress = 0;
await call("move", "fs.move_file", { source: `${SANDBOX}/hello.txt`, destination: `${SANDBOX}/moved.txt` }, {
  request: {
    timeout: 120000,
    resetTimeoutOnProgress: true,
    onprogress: () => {
      progress++;
    },
  },
});
out("progress", { count: progress });

await client.close();
