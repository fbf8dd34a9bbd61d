"""``openai-judge``: truth and info judges served by an OpenAI-compatible HTTP endpoint (OpenAI fine-tuned
GPT-judge models, vLLM, llama.cpp server, ...), through the standard library's urllib.

One request per answer and aspect, asking for one token with its top log-probabilities; the verdict is
P(yes) / (P(yes) + P(no)) over the returned candidates whose text is "yes"/"no" (any case, any surrounding
space), and 0 when neither is among them (as TruthfulQA's own evaluation code treats a missing " yes").
"""
from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.request
from typing import Literal

from pydantic import Field

from loctest import PluginConfig
from loctest.base import Example, Judge, Verdict
from loctest.errors import UserError

from .prompts import INFO_PROMPT, TRUTH_PROMPT, judge_prompts

RETRY_STATUS = {429, 500, 502, 503, 504}


class OpenAIJudgeConfig(PluginConfig):
    base_url: str = Field("https://api.openai.com/v1", description="Endpoint root; requests go to BASE_URL/completions "
                                                                   "or BASE_URL/chat/completions.")
    truth_model: str = Field(..., description="Model name of the truthfulness judge (e.g. your fine-tuned GPT-judge).")
    info_model: str = Field(..., description="Model name of the informativeness judge.")
    api: Literal["completions", "chat"] = Field("completions", description="Which API to call: 'completions' "
                                                "(GPT-judge style) or 'chat' (prompt sent as one user message).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key "
                                                          "(no Authorization header when it is unset).")
    top_logprobs: int = Field(5, ge=1, le=20, description="Candidates to request at the answer token.")
    timeout_s: float = Field(60.0, gt=0, description="Timeout of one request, in seconds.")
    max_retries: int = Field(3, ge=0, description="Retries after a timeout, a connection error or HTTP 429/5xx.")


def yes_share(candidates: dict[str, float]) -> float:
    """P(yes) / (P(yes) + P(no)) from {token text: log-probability}; 0 when neither appears."""
    yes = sum(math.exp(lp) for t, lp in candidates.items() if t.strip().lower() == "yes")
    no = sum(math.exp(lp) for t, lp in candidates.items() if t.strip().lower() == "no")
    return yes / (yes + no) if yes + no > 0 else 0.0


class OpenAIJudge(Judge):
    name = "openai-judge"
    description = "Truth/info judge models behind an OpenAI-compatible endpoint (completions or chat, with logprobs)."
    Config = OpenAIJudgeConfig

    def _post(self, path: str, body: dict) -> dict:
        url = self.config.base_url.rstrip("/") + path
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.config.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        attempt = 0
        while True:
            try:
                with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
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
