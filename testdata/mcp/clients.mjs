// The MCP client layers of the frameworks people use, driven directly (no
// model is called), for rulelock's end-to-end tests
// (cmd/rulelock/mcp_clients_test.go). Each connects to rulelock over stdio
// or streamable HTTP exactly as its documentation says, and runs the same
// scenario: list the tools, an allowed read, a denied read, and a move that
// waits for approval and comes back pending. One JSON line per step.
//
//   node clients.mjs CLIENT stdio COMMAND [ARGS...]
//   node clients.mjs CLIENT http URL TOKEN
//
// CLIENT is one of: sdk-2 (@modelcontextprotocol/client, the newest
// generation), sdk-1 (@modelcontextprotocol/sdk 1.x), sdk-2025-06-18 and
// sdk-2025-03-26 (the 1.x releases whose newest protocol was that version),
// agents (@openai/agents), ai-sdk (@ai-sdk/mcp), langchain
// (@langchain/mcp-adapters), inspector (@modelcontextprotocol/inspector's
// CLI mode).
//
// Environment: SANDBOX is the directory the scenario works in; PREFIX is
// put before each tool name ("fs_" through rulelock, "" to call the
// filesystem server directly); STEPS limits the steps (default all).
const [client, mode, ...rest] = process.argv.slice(2);
const SANDBOX = process.env.SANDBOX;
const PREFIX = process.env.PREFIX ?? "";
const STEPS = (process.env.STEPS ?? "list,read,deny,pending").split(",");

function out(step, v) {
  console.log(JSON.stringify({ client, step, ...v }));
}

function textOf(content) {
  if (typeof content === "string") return content;
  if (content?.type === "text") return content.text;
  if (!Array.isArray(content)) return JSON.stringify(content);
  return content
    .map((c) => (typeof c === "string" ? c : c.type === "text" ? c.text : ""))
    .join("");
}

// Official 1.x clients: the version the session negotiated is read off the
// wire (the initialize result); 2.x clients say it.
function watch(transport, seen) {
  const send = transport.send.bind(transport);
  transport.send = (msg, opts) => {
    const v = msg?.params?._meta?.["io.modelcontextprotocol/protocolVersion"];
    if (v) seen.version = v;
    return send(msg, opts);
  };
  let handler;
  Object.defineProperty(transport, "onmessage", {
    configurable: true,
    get: () => handler,
    set: (h) => {
      handler = (msg, extra) => {
        if (msg?.result?.protocolVersion && !seen.version) seen.version = msg.result.protocolVersion;
        return h(msg, extra);
      };
    },
  });
}

async function official(pkg) {
  const seen = {};
  let Client, Stdio, HTTP;
  if (pkg === "@modelcontextprotocol/client") {
    ({ Client, StreamableHTTPClientTransport: HTTP } = await import("@modelcontextprotocol/client"));
    ({ StdioClientTransport: Stdio } = await import("@modelcontextprotocol/client/stdio"));
  } else {
    ({ Client } = await import(`${pkg}/client/index.js`));
    ({ StdioClientTransport: Stdio } = await import(`${pkg}/client/stdio.js`));
    ({ StreamableHTTPClientTransport: HTTP } = await import(`${pkg}/client/streamableHttp.js`));
  }
  const transport =
    mode === "stdio"
      ? new Stdio({ command: rest[0], args: rest.slice(1), stderr: "inherit" })
      : new HTTP(new URL(rest[0]), { requestInit: { headers: { Authorization: `Bearer ${rest[1]}` } } });
  // The 2.x client negotiates 2026-07-28 when asked to (the Agents SDK
  // asks); left to its default it speaks 2025-11-25, as 1.x does.
  const opts = pkg === "@modelcontextprotocol/client" ? { versionNegotiation: { mode: "auto" } } : undefined;
  const c = new Client({ name: "rulelock-e2e", version: "1.0.0" }, opts);
  if (!opts) watch(transport, seen);
  await c.connect(transport);
  return {
    version: () => (opts ? c.getNegotiatedProtocolVersion() : seen.version),
    list: async () => (await c.listTools()).tools.map((t) => t.name),
    call: async (name, args) => {
      const r = await c.callTool({ name, arguments: args });
      return { isError: !!r.isError, text: textOf(r.content), meta: r._meta ?? null };
    },
    close: () => c.close(),
  };
}

async function agents() {
  const { MCPServerStdio, MCPServerStreamableHttp } = await import("@openai/agents");
  const server =
    mode === "stdio"
      ? new MCPServerStdio({ name: "rulelock", command: rest[0], args: rest.slice(1) })
      : new MCPServerStreamableHttp({
          name: "rulelock",
          url: rest[0],
          requestInit: { headers: { Authorization: `Bearer ${rest[1]}` } },
        });
  await server.connect();
  return {
    list: async () => (await server.listTools()).map((t) => t.name),
    // callToolResult is what the Agents runtime parses and hands the model.
    call: async (name, args) => {
      const r = await server.callToolResult(name, args);
      return { isError: !!r.isError, text: textOf(r.content), meta: r._meta ?? null };
    },
    close: () => server.close(),
  };
}

async function aiSDK() {
  const { createMCPClient } = await import("@ai-sdk/mcp");
  let transport;
  if (mode === "stdio") {
    const { Experimental_StdioMCPTransport } = await import("@ai-sdk/mcp/mcp-stdio");
    transport = new Experimental_StdioMCPTransport({ command: rest[0], args: rest.slice(1) });
  } else {
    transport = { type: "http", url: rest[0], headers: { Authorization: `Bearer ${rest[1]}` } };
  }
  const c = await createMCPClient({ transport });
  let tools;
  return {
    list: async () => Object.keys((tools = await c.tools())),
    // execute is what generateText/streamText call with the model's input.
    call: async (name, args) => {
      tools ??= await c.tools();
      const r = await tools[name].execute(args, { toolCallId: "call-1", messages: [] });
      return { isError: !!r.isError, text: textOf(r.content), meta: r._meta ?? null };
    },
    close: () => c.close(),
  };
}

async function langchain() {
  const { MultiServerMCPClient } = await import("@langchain/mcp-adapters");
  const conn =
    mode === "stdio"
      ? { transport: "stdio", command: rest[0], args: rest.slice(1) }
      : { transport: "http", url: rest[0], headers: { Authorization: `Bearer ${rest[1]}` } };
  const c = new MultiServerMCPClient({ mcpServers: { rulelock: conn }, prefixToolNameWithServerName: false });
  let tools;
  const byName = async () => Object.fromEntries((tools ??= await c.getTools()).map((t) => [t.name, t]));
  return {
    list: async () => Object.keys(await byName()),
    // invoke is what a LangGraph ToolNode calls. A tool result with isError
    // is thrown as a ToolException, which ToolNode hands the model as text.
    call: async (name, args) => {
      const t = (await byName())[name];
      try {
        const r = await t.invoke(args);
        return { isError: false, text: textOf(r) };
      } catch (e) {
        if (e?.name !== "ToolException") throw e;
        return { isError: true, text: String(e.message) };
      }
    },
    close: () => c.close(),
  };
}

// The MCP inspector's CLI mode, one process per step, as a person or a
// script would run it (npx @modelcontextprotocol/inspector --cli ...).
async function inspector() {
  const { execFile } = await import("node:child_process");
  const bin = new URL("./node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js", import.meta.url).pathname;
  const run = (method) =>
    new Promise((resolve, reject) => {
      const args =
        mode === "stdio"
          ? ["--cli", ...method, "--", ...rest]
          : ["--cli", rest[0], "--transport", "http", "--header", `Authorization: Bearer ${rest[1]}`, ...method];
      execFile(process.execPath, [bin, ...args], { maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
        process.stderr.write(stderr);
        try {
          resolve(JSON.parse(stdout));
        } catch {
          reject(new Error(`inspector ${args.join(" ")}: ${err?.message ?? ""}\n${stdout}`));
        }
      });
    });
  return {
    list: async () => (await run(["--method", "tools/list"])).tools.map((t) => t.name),
    call: async (name, args) => {
      const pairs = Object.entries(args).map(([k, v]) => `${k}=${v}`);
      const r = await run(["--method", "tools/call", "--tool-name", name, "--tool-arg", ...pairs]);
      if (r.error) throw Object.assign(new Error(r.error.message), { code: r.error.code });
      return { isError: !!r.isError, text: textOf(r.content), meta: r._meta ?? null };
    },
    close: () => {},
  };
}

const makers = {
  "sdk-2": () => official("@modelcontextprotocol/client"),
  "sdk-1": () => official("@modelcontextprotocol/sdk"),
  "sdk-2025-06-18": () => official("mcp-sdk-2025-06-18"),
  "sdk-2025-03-26": () => official("mcp-sdk-2025-03-26"),
  agents,
  "ai-sdk": aiSDK,
  langchain,
  inspector,
};
if (!makers[client] || !["stdio", "http"].includes(mode)) {
  console.error("usage: clients.mjs CLIENT (stdio COMMAND [ARGS...] | http URL TOKEN)");
  process.exit(2);
}

const c = await makers[client]();
async function step(name, fn) {
  if (!STEPS.includes(name)) return;
  try {
    out(name, await fn());
  } catch (e) {
    out(name, { error: { code: e?.code ?? null, message: String(e?.message ?? e) } });
  }
}
await step("list", async () => ({ tools: (await c.list()).sort() }));
await step("read", () => c.call(`${PREFIX}read_text_file`, { path: `${SANDBOX}/hello.txt` }));
// A framework calls only listed tools, and rulelock lists only what the
// policy may allow: the denial is a read of a secret.
await step("deny", () => c.call(`${PREFIX}read_text_file`, { path: `${SANDBOX}/secret.txt` }));
await step("pending", () =>
  c.call(`${PREFIX}move_file`, { source: `${SANDBOX}/hello.txt`, destination: `${SANDBOX}/moved.txt` }),
);
if (c.version) out("version", { version: c.version() ?? null });
await c.close();
process.exit(0);
