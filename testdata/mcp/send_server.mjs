// A mail-like MCP server on the official TypeScript SDK, for rulelock's
// argument-validation tests (cmd/rulelock/mcp_args_e2e_test.go). Its one
// tool, send, has an input schema with every kind of constraint; every call
// that reaches it is appended, as its arguments in JSON, to the file named
// by RECORD, so a test can tell what got through.
//
//   node send_server.mjs
import { appendFileSync } from "node:fs";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const inputSchema = {
  type: "object",
  properties: {
    to: { type: "string", pattern: "^[a-z0-9.]+@example\\.com$" },
    subject: { type: "string", maxLength: 200 },
    priority: { type: "string", enum: ["low", "normal", "high"] },
    count: { type: "integer", minimum: 1, maximum: 10 },
  },
  required: ["to", "subject"],
  additionalProperties: false,
};

const server = new Server({ name: "send-server", version: "1.0.0" }, { capabilities: { tools: {} } });
server.setRequestHandler(ListToolsRequestSchema, async () => ({
  tools: [{ name: "send", description: "Sends a message.", inputSchema }],
}));
server.setRequestHandler(CallToolRequestSchema, async (req) => {
  appendFileSync(process.env.RECORD, JSON.stringify(req.params.arguments) + "\n");
  return { content: [{ type: "text", text: "sent" }] };
});
await server.connect(new StdioServerTransport());
