"""The official OpenAI and Anthropic Python SDKs pointed at warden by base URL only.

Run by tests/sdk_python.rs, which starts warden in front of the mock and sets WARDEN_URL.
Each test uses the SDK exactly as an application would; failures surface as the SDK's own
typed exceptions.
"""

import os
import unittest

import anthropic
import openai

URL = os.environ["WARDEN_URL"]
KEY = "sk-warden-demo"


def oai(**kw):
    return openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0, **kw)


def ant(**kw):
    return anthropic.Anthropic(base_url=URL, api_key=KEY, max_retries=0, **kw)


class OpenAISDK(unittest.TestCase):
    def test_chat(self):
        r = oai().chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "hi"}])
        self.assertEqual(r.object, "chat.completion")
        self.assertTrue(r.choices[0].message.content.startswith("Hello from the warden mock provider."))
        self.assertGreater(r.usage.total_tokens, 0)

    def test_streaming_chat(self):
        stream = oai().chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = "", None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if chunk.usage:
                usage = chunk.usage
        self.assertTrue(text.startswith("Hello from the warden mock provider."), text)
        self.assertIsNotNone(usage)

    def test_embeddings(self):
        # The SDK asks for base64 by default and decodes it.
        r = oai().embeddings.create(model="mock-1", input=["a", "b"], dimensions=8)
        self.assertEqual(len(r.data), 2)
        self.assertEqual(len(r.data[0].embedding), 8)
        self.assertAlmostEqual(sum(x * x for x in r.data[0].embedding), 1.0, places=4)

    def test_responses(self):
        r = oai().responses.create(model="mock-1", input="hi")
        self.assertTrue(r.output_text.startswith("Hello from the warden mock"))

    def test_models(self):
        ids = [m.id for m in oai().models.list()]
        self.assertIn("mock-1", ids)

    def test_401_is_authentication_error(self):
        with self.assertRaises(openai.AuthenticationError) as cm:
            openai.OpenAI(base_url=URL + "/v1", api_key="sk-wrong", max_retries=0).chat.completions.create(
                model="mock-1", messages=[{"role": "user", "content": "hi"}])
        self.assertEqual(cm.exception.status_code, 401)
        self.assertEqual(cm.exception.code, "invalid_api_key")
        self.assertTrue(cm.exception.response.headers["x-warden-request-id"].startswith("req_"))

    def test_429_is_rate_limit_error(self):
        with self.assertRaises(openai.RateLimitError) as cm:
            oai().chat.completions.create(
                model="mock-1", messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-mock": "status=429,retry-after=1"})
        self.assertEqual(cm.exception.status_code, 429)
        self.assertEqual(cm.exception.response.headers["retry-after"], "1")

    def test_failed_streams_raise(self):
        # gpt-4o reaches the mock over HTTP with a 500 ms between-chunks timeout.
        for directive in ["cut-after=3", "garbage-after=2", "no-end", "chunk-delay=2s"]:
            for model in ["mock-1", "gpt-4o"]:
                if directive.startswith("chunk-delay") and model != "gpt-4o":
                    continue
                with self.subTest(directive=directive, model=model):
                    with self.assertRaises(openai.APIError) as cm:
                        for _ in oai().chat.completions.create(
                                model=model, messages=[{"role": "user", "content": "hi"}], stream=True,
                                extra_headers={"x-mock": directive}):
                            pass
                    self.assertIn("the response is incomplete", str(cm.exception))
        with self.assertRaises(openai.APIError):
            for _ in oai().responses.create(model="mock-1", input="hi", stream=True,
                                            extra_headers={"x-mock": "no-end"}):
                pass

    def test_garbage_200_is_a_server_error(self):
        with self.assertRaises(openai.InternalServerError) as cm:
            oai().chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "hi"}],
                                          extra_headers={"x-mock": "bad-json"})
        self.assertEqual(cm.exception.status_code, 502)


    def test_a_429_warden_retried_is_one_answer(self):
        # The SDK does not retry (max_retries=0); warden does, after the upstream's retry-after.
        r = oai().chat.completions.create(
            model="retry-1", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock": "status=429,retry-after=0,times=1,tokens=7"},
        )
        self.assertEqual(r.object, "chat.completion")
        self.assertTrue(r.choices[0].message.content.startswith("Hello"))

    # tests/sdk_python.rs runs warden with a `schema` policy (reject, passthrough streams)
    # for mock-* models: output that breaks the request's declared schema is refused.
    INVOICE = {"name": "invoice", "strict": True, "schema": {
        "type": "object", "required": ["amount", "currency"], "additionalProperties": False,
        "properties": {"amount": {"type": "number"}, "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}}}

    def test_structured_output_is_validated(self):
        fmt = {"type": "json_schema", "json_schema": self.INVOICE}
        msgs = [{"role": "user", "content": "extract"}]
        good = '{"amount": 12.5, "currency": "EUR"}'
        r = oai().chat.completions.create(model="mock-1", messages=msgs, response_format=fmt,
                                          extra_headers={"x-mock-reply": good})
        self.assertEqual(r.choices[0].message.content, good)
        with self.assertRaises(openai.InternalServerError) as cm:
            oai().chat.completions.create(model="mock-1", messages=msgs, response_format=fmt,
                                          extra_headers={"x-mock-reply": '{"amount": "12", "currency": "EUR"}'})
        self.assertEqual(cm.exception.status_code, 502)
        self.assertEqual(cm.exception.code, "output_schema_violation")
        self.assertIn("/amount", cm.exception.message)

    def test_a_passthrough_stream_with_invalid_output_raises(self):
        fmt = {"type": "json_schema", "json_schema": self.INVOICE}
        stream = oai().chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "x"}],
                                               response_format=fmt, stream=True,
                                               extra_headers={"x-mock-reply": '{"amount": 1, "currency": "eur"}'})
        with self.assertRaises(openai.APIError) as cm:
            for _ in stream:
                pass
        self.assertIn("/currency", str(cm.exception))


class AnthropicSDK(unittest.TestCase):
    def test_messages(self):
        r = ant().messages.create(model="mock-1", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
        self.assertEqual(r.type, "message")
        self.assertTrue(r.content[0].text.startswith("Hello from the warden mock provider."))
        self.assertEqual(r.stop_reason, "end_turn")

    def test_streaming_messages(self):
        with ant().messages.stream(model="mock-1", max_tokens=64,
                                   messages=[{"role": "user", "content": "hi"}]) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        self.assertTrue(text.startswith("Hello from the warden mock provider."), text)
        self.assertEqual(final.usage.output_tokens, 23)

    def test_a_529_warden_retried_is_one_answer(self):
        r = ant().messages.create(
            model="claude-retry-1", max_tokens=64, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock": "status=529,retry-after=0,times=1,tokens=8"},
        )
        self.assertEqual(r.type, "message")
        self.assertTrue(r.content[0].text.startswith("Hello"))

    def test_count_tokens(self):
        r = ant().messages.count_tokens(model="mock-1", messages=[{"role": "user", "content": "hi"}])
        self.assertGreater(r.input_tokens, 0)

    def test_tool_use(self):
        r = ant().messages.create(model="mock-1", max_tokens=64, messages=[{"role": "user", "content": "weather?"}],
                                  extra_headers={"x-mock": "tool=get_weather"})
        self.assertEqual(r.stop_reason, "tool_use")
        self.assertEqual(r.content[0].name, "get_weather")

    def test_tool_input_is_validated_against_its_input_schema(self):
        tools = [{"name": "record", "input_schema": {"type": "object", "required": ["amount"],
                                                     "properties": {"amount": {"type": "number"}}}}]
        with self.assertRaises(anthropic.InternalServerError) as cm:
            ant().messages.create(model="mock-1", max_tokens=64, tools=tools,
                                  messages=[{"role": "user", "content": "record it"}],
                                  extra_headers={"x-mock": "tool=record", "x-mock-tool-args": '{"amount": "x"}'})
        self.assertEqual(cm.exception.status_code, 502)
        self.assertIn("/amount", cm.exception.message)
        r = ant().messages.create(model="mock-1", max_tokens=64, tools=tools,
                                  messages=[{"role": "user", "content": "record it"}],
                                  extra_headers={"x-mock": "tool=record", "x-mock-tool-args": '{"amount": 3}'})
        self.assertEqual(r.content[0].input, {"amount": 3})

    def test_401_is_authentication_error(self):
        with self.assertRaises(anthropic.AuthenticationError) as cm:
            anthropic.Anthropic(base_url=URL, api_key="sk-wrong", max_retries=0).messages.create(
                model="mock-1", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        self.assertEqual(cm.exception.status_code, 401)
        self.assertEqual(cm.exception.body["error"]["type"], "authentication_error")

    def test_429_is_rate_limit_error(self):
        with self.assertRaises(anthropic.RateLimitError) as cm:
            ant().messages.create(model="mock-1", max_tokens=5, messages=[{"role": "user", "content": "hi"}],
                                  extra_headers={"x-mock": "status=429"})
        self.assertEqual(cm.exception.status_code, 429)

    def test_failed_streams_raise(self):
        for directive in ["cut-after=3", "garbage-after=2", "no-end"]:
            for model in ["mock-1", "claude-test"]:
                with self.subTest(directive=directive, model=model):
                    with self.assertRaises(anthropic.APIError) as cm:
                        with ant().messages.stream(model=model, max_tokens=64,
                                                   messages=[{"role": "user", "content": "hi"}],
                                                   extra_headers={"x-mock": directive}) as stream:
                            for _ in stream.text_stream:
                                pass
                    self.assertIn("the response is incomplete", str(cm.exception))

    def test_garbage_200_is_a_server_error(self):
        with self.assertRaises(anthropic.InternalServerError) as cm:
            ant().messages.create(model="mock-1", max_tokens=5, messages=[{"role": "user", "content": "hi"}],
                                  extra_headers={"x-mock": "bad-json"})
        self.assertEqual(cm.exception.status_code, 502)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print(f"sdk: {result.testsRun - failed} passed, {failed} failed")
    raise SystemExit(1 if failed or result.testsRun == 0 else 0)
