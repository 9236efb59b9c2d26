// The openai Node SDK's own tool loop (runTools) through AgentGym: one task as an episode, its
// outcome sent as feedback.
//   export OPENAI_BASE_URL=http://127.0.0.1:8080/v1   # the proxy (`agentgym serve`)
//   node agent.mjs [--stream] ["Where is my order A-1001?"]
import { randomUUID } from "node:crypto";
import OpenAI from "openai";

const ORDERS = { "A-1001": "shipped", "A-1002": "processing" };
let failed = false;

function getOrderStatus({ order_id }) {
  if (!(order_id in ORDERS)) {
    failed = true;
    return { error: `no order ${order_id}` };
  }
  return { order_id, status: ORDERS[order_id] };
}

const args = process.argv.slice(2);
const stream = args.includes("--stream");
const question = args.find((arg) => !arg.startsWith("--")) ?? "Where is my order A-1001?";
const episodeId = `ep-${randomUUID()}`; // names the episode; without it the proxy links the calls itself
const client = new OpenAI({ defaultHeaders: { "X-AgentGym-Episode-Id": episodeId } });

const runner = client.chat.completions.runTools({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: question }],
  tools: [{
    type: "function",
    function: {
      name: "get_order_status",
      description: "Get the status of an order by its id.",
      parameters: {
        type: "object",
        properties: { order_id: { type: "string", description: "such as 'A-1000'" } },
        required: ["order_id"],
      },
      function: getOrderStatus,
      parse: JSON.parse,
    },
  }],
  ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
});
const answer = await runner.finalContent();

// The outcome, for AgentGym's trainer: POST /v1/feedback beside the chat completions.
const feedback = await fetch(`${client.baseURL}/feedback`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ episode_id: episodeId, success: !failed }),
});
if (!feedback.ok) console.warn(`feedback not recorded: ${feedback.status}`);
console.log(`episode ${episodeId}: ${answer}`);
