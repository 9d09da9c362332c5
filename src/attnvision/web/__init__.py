"""The interactive app behind ``attnvision serve``: click-to-segment in the browser.

One job per module, each knowing only those listed before it:

- ``errors``: the one exception the API turns into a 4xx/5xx JSON answer;
- ``config``: the server's settings and limits (a frozen dataclass, filled by the command);
- ``model``: the one function that loads the model (a shipped default drops in there);
- ``uploads``: images accepted, validated and kept on disk under random ids;
- ``embeddings``: the memory-bounded LRU of image embeddings;
- ``engine``: the model at work: background encoding, prompts, segment everything;
- ``render``: masks as PNG, COCO RLE, a coloured overlay and COCO documents;
- ``schemas``: the JSON bodies of the HTTP API (its OpenAPI page is built from them);
- ``server``: the FastAPI app, its guards (token, hosts, body size) and the static page.

Nothing here is imported by ``import attnvision``: FastAPI, uvicorn and python-multipart are
an optional dependency (``pip install attnvision[web]``); only ``server`` and ``schemas``
import them.
"""
