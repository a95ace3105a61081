"""The official Anthropic Python SDK through a local warden: only the base URL changes."""
from anthropic import Anthropic

client = Anthropic(base_url="http://127.0.0.1:8787", api_key="sk-warden-demo")
msg = client.messages.create(model="mock-1", max_tokens=128, messages=[{"role": "user", "content": "Hello"}])
print(msg.content[0].text)
with client.messages.stream(model="mock-1", max_tokens=128, messages=[{"role": "user", "content": "Hello"}]) as s:
    for text in s.text_stream:
        print(text, end="", flush=True)
print()
