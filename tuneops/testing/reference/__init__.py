"""Published API specifications the test servers validate against, and a small validator for them.

``azure/`` holds Microsoft's REST specifications for Azure OpenAI fine-tuning (data-plane
authoring ``2025-04-01-preview``) and Cognitive Services deployments (management ``2024-10-01``),
excerpted unchanged from github.com/Azure/azure-rest-api-specs (MIT, see ``azure/LICENSE`` and
``azure/SOURCE``), kept at their repository paths so relative ``$ref``s resolve as there.
``openai/openapi-subset.json`` is OpenAI's published OpenAPI description of the endpoints tuneops
speaks (files, fine-tuning jobs, models, chat completions, errors; MIT, see ``openai/LICENSE`` and
``openai/SOURCE``): what the local service, the gateway and the stubs answer must validate against it.
"""

from __future__ import annotations

from pathlib import Path

AZURE_SPECS = Path(__file__).parent / "azure" / "specification"
AZURE_DATA_PLANE = (
    AZURE_SPECS
    / "cognitiveservices/data-plane/AzureOpenAI/authoring/preview/2025-04-01-preview/azureopenai.json"
)
AZURE_MANAGEMENT = (
    AZURE_SPECS
    / "cognitiveservices/resource-manager/Microsoft.CognitiveServices/stable/2024-10-01"
    / "cognitiveservices.json"
)

OPENAI_OPENAPI = Path(__file__).parent / "openai" / "openapi-subset.json"

__all__ = ["AZURE_DATA_PLANE", "AZURE_MANAGEMENT", "AZURE_SPECS", "OPENAI_OPENAPI"]
