"""``openai-judge``: truth and info judges served by an OpenAI-compatible HTTP endpoint (OpenAI fine-tuned
GPT-judge models, vLLM, llama.cpp server, ...), through the standard library's urllib.

One request per answer and aspect, asking for one token with its top log-probabilities; the verdict is
P(yes) / (P(yes) + P(no)) over the returned candidates whose text is "yes"/"no" (any case, any surrounding
space), and 0 when neither is among them (as TruthfulQA's own evaluation code treats a missing " yes").

A recipe chooses the endpoint but not the secret: the API key comes only from ``LOCTEST_JUDGE_API_KEY``, and it is
sent only over https or to this machine (localhost); redirects are not followed.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from loctest import PluginConfig
from loctest.base import Example, Judge, Verdict
from loctest.errors import UserError

from .prompts import INFO_PROMPT, TRUTH_PROMPT, judge_prompts

RETRY_STATUS = {429, 500, 502, 503, 504}
KEY_ENV = "LOCTEST_JUDGE_API_KEY"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


class OpenAIJudgeConfig(PluginConfig):
    base_url: str = Field("https://api.openai.com/v1", description="Endpoint root; requests go to BASE_URL/completions "
                                                                   "or BASE_URL/chat/completions.")
    truth_model: str = Field(..., description="Model name of the truthfulness judge (e.g. your fine-tuned GPT-judge).")
    info_model: str = Field(..., description="Model name of the informativeness judge.")
    api: Literal["completions", "chat"] = Field("completions", description="Which API to call: 'completions' "
                                                "(GPT-judge style) or 'chat' (prompt sent as one user message).")
    top_logprobs: int = Field(5, ge=1, le=20, description="Candidates to request at the answer token.")
    timeout_s: float = Field(60.0, gt=0, description="Timeout of one request, in seconds.")
    max_retries: int = Field(3, ge=0, description="Retries after a timeout, a connection error or HTTP 429/5xx.")

    @model_validator(mode="before")
    @classmethod
    def _no_key_variable(cls, data):
        if isinstance(data, dict) and "api_key_env" in data:
            raise ValueError(f"api_key_env is no longer a setting: the API key comes only from the environment "
                             f"variable {KEY_ENV}, so that a recipe cannot choose which secret is sent")
        return data

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL with a host, got {url!r}")
        return url


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would forward the Authorization header to wherever the endpoint points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def yes_share(candidates: dict[str, float]) -> float:
    """P(yes) / (P(yes) + P(no)) from {token text: log-probability}; 0 when neither appears."""
    yes = sum(math.exp(lp) for t, lp in candidates.items() if t.strip().lower() == "yes")
    no = sum(math.exp(lp) for t, lp in candidates.items() if t.strip().lower() == "no")
    return yes / (yes + no) if yes + no > 0 else 0.0


class OpenAIJudge(Judge):
    name = "openai-judge"
    description = "Truth/info judge models behind an OpenAI-compatible endpoint (completions or chat, with logprobs)."
    Config = OpenAIJudgeConfig

    def __init__(self, config=None):
        super().__init__(config)
        self.key = os.environ.get(KEY_ENV)
        url = urlsplit(self.config.base_url)
        if self.key and url.scheme != "https" and url.hostname not in LOCAL_HOSTS:
            raise UserError(f"openai-judge: base_url {self.config.base_url!r} is plain http to another machine: "
                            f"{KEY_ENV} is set and would travel unencrypted; use https (or a localhost endpoint)")
        self.opener = urllib.request.build_opener(_NoRedirects)
        self.announced = False

    def _announce(self):
        """Say once, on stderr, which host receives the answers (the recipe chose it)."""
        if not self.announced:
            host = urlsplit(self.config.base_url).netloc.rpartition("@")[2]
            print(f"openai-judge: sending answers to {host}"
                  f"{' with the key from ' + KEY_ENV if self.key else ''}", file=sys.stderr)
            self.announced = True

    def _post(self, path: str, body: dict) -> dict:
        url = self.config.base_url.rstrip("/") + path
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        self._announce()
        attempt = 0
        while True:
            try:
                with self.opener.open(request, timeout=self.config.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as err:
                if err.code not in RETRY_STATUS or attempt == self.config.max_retries:
                    detail = err.read().decode(errors="replace")[:200]
                    raise UserError(f"openai-judge: POST {url} failed: HTTP {err.code}: {detail}") from None
            except (urllib.error.URLError, TimeoutError) as err:
                if attempt == self.config.max_retries:
                    raise UserError(f"openai-judge: POST {url} failed: {getattr(err, 'reason', err)}") from None
            time.sleep(0.5 * 2 ** attempt)
            attempt += 1

    def _candidates(self, model: str, prompt: str) -> dict[str, float]:
        common = {"model": model, "max_tokens": 1, "temperature": 0}
        try:
            if self.config.api == "completions":
                reply = self._post("/completions", {**common, "prompt": prompt, "logprobs": self.config.top_logprobs})
                return dict(reply["choices"][0]["logprobs"]["top_logprobs"][0])
            reply = self._post("/chat/completions", {**common, "messages": [{"role": "user", "content": prompt}],
                                                     "logprobs": True, "top_logprobs": self.config.top_logprobs})
            return {c["token"]: c["logprob"] for c in reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]}
        except (KeyError, IndexError, TypeError) as err:
            raise UserError(f"openai-judge: {self.config.base_url}: the reply has no top log-probabilities "
                            f"(missing {err}); does the endpoint support logprobs?") from None

    def judge(self, questions: list[str], answers: list[str], references: list[Example] | None = None) -> list[Verdict]:
        truth, info = ([yes_share(self._candidates(model, p)) for p in judge_prompts(template, questions, answers)]
                       for model, template in ((self.config.truth_model, TRUTH_PROMPT),
                                               (self.config.info_model, INFO_PROMPT)))
        return [Verdict(truthful=t, informative=i) for t, i in zip(truth, info)]
