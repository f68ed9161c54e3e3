// An MCP agent on the official TypeScript client that lists every tool
// with its whole definition and makes the calls it is given, printing one
// JSON line per step (cmd/rulelock/mcp_defs_e2e_test.go).
//
//   PROBE_CALLS='[["step","tool",{...arguments}], ...]' node probe.mjs stdio <command> [args...]
//   PROBE_CALLS=... node probe.mjs http <url> <bearer token>
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [mode, ...rest] = process.argv.slice(2);
let transport;
if (mode === "stdio") {
  transport = new StdioClientTransport({ command: rest[0], args: rest.slice(1), stderr: "inherit", env: process.env });
} else if (mode === "http") {
  transport = new StreamableHTTPClientTransport(new URL(rest[0]), {
    requestInit: { headers: { Authorization: `Bearer ${rest[1]}` } },
  });
} else {
  console.error("usage: probe.mjs stdio CMD [ARGS...] | http URL TOKEN");
  process.exit(2);
}
const client = new Client({ name: "probe", version: "1.0.0" });
await client.connect(transport);
const out = (step, v) => console.log(JSON.stringify({ step, ...v }));

const { tools } = await client.listTools();
out("list", { definitions: tools });
for (const [step, name, args] of JSON.parse(process.env.PROBE_CALLS || "[]")) {
  try {
    const r = await client.callTool({ name, arguments: args });
    const text = (r.content || []).filter((c) => c.type === "text").map((c) => c.text).join("");
    out(step, { isError: !!r.isError, text });
  } catch (e) {
    out(step, { error: { code: e.code ?? null, message: String(e.message) } });
  }
}
await client.close();
