"""The official OpenAI Python SDK through a local warden: only the base URL changes."""
from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8787/v1", api_key="sk-warden-demo")
reply = client.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "Hello"}])
print(reply.choices[0].message.content)
for chunk in client.chat.completions.create(model="mock-1", stream=True,
                                             messages=[{"role": "user", "content": "Hello"}]):
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
