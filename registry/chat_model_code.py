"""MLflow "models from code" entry point for :class:`EndpointChatModel`.

MLflow copies this file into the model version and executes it at load time (instead of
unpickling an object); it is never imported by tuneops itself.
"""

from mlflow.models import set_model

from tuneops.registry.chat_model import EndpointChatModel

set_model(EndpointChatModel())
