// The official OpenAI and Anthropic JS SDKs through a local warden: only the base URL changes.
// cd examples && npm install && node openai_js.mjs   (package.json here names the SDKs)
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";

const openai = new OpenAI({ baseURL: "http://127.0.0.1:8787/v1", apiKey: "sk-warden-demo" });
const chat = await openai.chat.completions.create({ model: "mock-1", messages: [{ role: "user", content: "Hello" }] });
console.log(chat.choices[0].message.content);

const anthropic = new Anthropic({ baseURL: "http://127.0.0.1:8787", apiKey: "sk-warden-demo" });
const msg = await anthropic.messages.create({ model: "mock-1", max_tokens: 128, messages: [{ role: "user", content: "Hello" }] });
console.log(msg.content[0].text);
