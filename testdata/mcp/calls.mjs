// Runs the tool calls in $CALLS (a JSON list of {step, name, arguments})
// through rulelock with the official TypeScript client, over stdio or
// streamable HTTP, and prints one JSON line per call
// (cmd/rulelock/mcp_paths_e2e_test.go).
//
//   CALLS='[...]' node calls.mjs stdio <command> [args...]
//   CALLS='[...]' node calls.mjs http <url> <bearer token>
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
  console.error("usage: calls.mjs stdio CMD [ARGS...] | http URL TOKEN");
  process.exit(2);
}

const client = new Client({ name: "calls", version: "1.0.0" });
await client.connect(transport);
// A call names the tool as its action type ("fs.read_text_file"); the agent
// may see it joined by another separator ("fs_read_text_file").
const listed = new Set((await client.listTools()).tools.map((t) => t.name));
const toolName = (n) => (listed.has(n) ? n : n.replace(".", "_"));
for (const c of JSON.parse(process.env.CALLS)) {
  try {
    const r = await client.callTool({ name: toolName(c.name), arguments: c.arguments });
    const text = (r.content || []).filter((x) => x.type === "text").map((x) => x.text).join("");
    console.log(JSON.stringify({ step: c.step, isError: !!r.isError, text }));
  } catch (e) {
    console.log(JSON.stringify({ step: c.step, error: { code: e.code ?? null, message: String(e.message) } }));
  }
}
await client.close();
