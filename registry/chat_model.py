"""The registered artifact: an MLflow pyfunc model that answers chat by calling the fine-tune's endpoint.

A hosted fine-tune has no weights we could log, so the model version holds the *address*:
``model_config`` carries the endpoint's base URL, the endpoint model id and the NAME of the
environment variable with the key. The key is read at load time and never stored. Loaded with
``mlflow.pyfunc.load_model("models:/NAME@champion")`` it answers:

- a list of conversations (each a list of ``{"role", "content"}`` messages),
- a pandas DataFrame with a ``messages`` column (conversations) or a ``prompt`` column (text),
- a list of prompts (strings), one prompt, or one ``{"messages": [...]}`` dict,

and returns one answer string per conversation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow.pyfunc import PythonModel

from tuneops.errors import ProviderAuthError, ProviderError, TransientProviderError, UsageError

Message = dict[str, str]
PLACEHOLDER_KEY = "not-needed"


def to_conversations(model_input: Any) -> list[list[Message]]:
    """Normalise every accepted input shape into a list of conversations.

    Raises:
        UsageError: the input is none of the documented shapes.
    """
    if hasattr(model_input, "columns") and hasattr(model_input, "to_dict"):  # a pandas DataFrame
        if "messages" in model_input.columns:
            return [_conversation(m) for m in model_input["messages"].tolist()]
        if "prompt" in model_input.columns:
            return [[{"role": "user", "content": str(p)}] for p in model_input["prompt"].tolist()]
        raise UsageError("a DataFrame input needs a 'messages' or a 'prompt' column")
    if isinstance(model_input, str):
        return [[{"role": "user", "content": model_input}]]
    if isinstance(model_input, Mapping):
        if "messages" in model_input:
            return [_conversation(model_input["messages"])]
        raise UsageError("a dict input needs a 'messages' key")
    if isinstance(model_input, Sequence) or hasattr(model_input, "tolist"):
        items = model_input.tolist() if hasattr(model_input, "tolist") else list(model_input)
        if items and all(isinstance(m, Mapping) and "role" in m for m in items):
            return [_conversation(items)]  # one conversation given as a flat list of messages
        return [
            [{"role": "user", "content": item}] if isinstance(item, str) else _conversation(item)
            for item in items
        ]
    raise UsageError(f"cannot answer input of type {type(model_input).__name__}")


def _conversation(value: Any) -> list[Message]:
    if isinstance(value, Mapping) and "messages" in value:
        value = value["messages"]
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise UsageError("a conversation must be a list of {'role', 'content'} messages")
    messages = []
    for message in value:
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise UsageError("each message needs 'role' and 'content'")
        messages.append({"role": str(message["role"]), "content": str(message["content"])})
    return messages


class EndpointChatModel(PythonModel):
    """Answers chat through an OpenAI-compatible endpoint named in ``model_config``.

    ``model_config`` keys: ``base_url``, ``model`` (the endpoint model id, e.g. ``ft:...``, or the
    Azure deployment), ``api_version`` (set for Azure OpenAI only),
    ``api_key_env`` (name of the key's environment variable, optional for keyless local
    endpoints), ``max_tokens``, ``temperature``, ``timeout``, ``max_retries``.
    """

    def load_context(self, context: Any) -> None:
        config = dict(context.model_config or {})
        self._config = config
        self._client: Any = None

    def _openai(self) -> Any:
        if self._client is None:
            import openai

            env = self._config.get("api_key_env")
            key = os.environ.get(env) if env else None
            if env and not key:
                raise ProviderAuthError(
                    f"the model's endpoint needs a key in ${env}, which is not set",
                    hint=f"export {env}=... before loading the model",
                )
            options = {
                "api_key": key or PLACEHOLDER_KEY,
                "timeout": float(self._config.get("timeout", 120)),
                "max_retries": int(self._config.get("max_retries", 2)),
            }
            if self._config.get("api_version"):  # Azure OpenAI: model is the deployment name
                self._client = openai.AzureOpenAI(
                    azure_endpoint=self._config["base_url"],
                    api_version=self._config["api_version"],
                    **options,
                )
            else:
                self._client = openai.OpenAI(base_url=self._config["base_url"], **options)
        return self._client

    def predict(self, context, model_input, params=None):  # untyped: MLflow turns hints into a schema
        """One answer per conversation; ``params`` may override max_tokens/temperature."""
        import openai

        options = {
            "max_tokens": int(self._config.get("max_tokens", 256)),
            "temperature": float(self._config.get("temperature", 0.0)),
        }
        options.update({k: v for k, v in (params or {}).items() if k in options})
        client = self._openai()
        answers = []
        for conversation in to_conversations(model_input):
            try:
                response = client.chat.completions.create(
                    model=self._config["model"], messages=conversation, **options
                )
            except openai.AuthenticationError as exc:
                raise ProviderAuthError(f"endpoint refused the key: {exc.message}", status_code=401) from exc
            except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
                raise TransientProviderError(f"endpoint unavailable: {exc}") from exc
            except openai.APIError as exc:
                raise ProviderError(f"endpoint failed: {exc}") from exc
            answers.append(response.choices[0].message.content or "")
        return answers
