"""Batched generation: concurrent chat completions for one model are decoded together.

On a CPU a forward pass of a 135M-parameter model costs about the same for 1 row as for 8 (it is
bound by reading the weights), so decoding concurrent requests as one batch multiplies the
generated tokens per second. Each loaded model has one ``Batcher``: a thread that takes the
queued requests (up to ``max_batch``), left-pads their prompts into one batch with an attention
mask and explicit positions, and decodes them with one KV cache. Every row stops on its own
(end-of-turn token, ``stop`` string or ``max_tokens``); finished rows leave the batch and the cache.
The start all prompts share (typically the system prompt of an evaluation) is computed once and
its cache copied to every row: reading a prompt is compute-bound, so batching alone would not
make it cheaper, and for short answers to long prompts it is most of the work.

Static batching: a batch runs to its end and requests arriving meanwhile wait for the next one.
The batcher collects requests for ``GATHER_SECONDS`` (a few ms: clients starting together land in
one batch, a lone client barely waits), and, when the previous batch had more than one request,
up to ``window`` seconds until as many have arrived as then (clients that send their next request
as soon as they get an answer stay batched).

What batching changes: nothing in the algorithm (greedy stays argmax, a seeded sample draws from
the row's own generator), but a row's logits come from a different matrix shape than alone
(padding, batch width), so float rounding can differ in the last bits. A greedy answer can only
change where two tokens are tied to within that rounding, and a seeded sample (temperature > 0)
is repeatable for the same seed when the batch composition is the same, not guaranteed across
compositions. Streamed completions are not batched (they decode alone, token by token).

A row that asks for ``logprobs`` gets them from its own row of the batch's logits, exactly as
alone (the same rounding caveat applies to the values); rows that do not ask cost nothing extra.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from tuneops.serving.local.inference import (
    GenerationResult,
    LoadedModel,
    SamplingParams,
    ScoredTokens,
    first_stop,
    new_generator,
    pick_token,
)

MAX_BATCH = 8
GATHER_SECONDS = 0.003
WINDOW_SECONDS = 0.05
MIN_SHARED_PREFIX = 16  # tokens; below that, computing a shared start once is not worth a forward pass


@dataclass
class _Request:
    prompt: list[int]
    params: SamplingParams
    done: threading.Event = field(default_factory=threading.Event)
    result: GenerationResult | None = None
    error: BaseException | None = None


class Batcher:
    """The queue and decoding thread of one loaded model (started on the first request)."""

    def __init__(
        self, model: LoadedModel, max_batch: int = MAX_BATCH, window: float = WINDOW_SECONDS
    ) -> None:
        self.model = model
        self.max_batch = max_batch
        self.window = window
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # the latest batches, for tests and the benchmark
        self._queue: list[_Request] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._last_size = 1

    def submit(self, prompt: list[int], params: SamplingParams) -> GenerationResult:
        """Queue one completion and wait for it (``PromptTooLong`` is raised here, not queued)."""
        self.model.room(prompt, params)
        request = _Request(prompt, params)
        with self._wake:
            self._queue.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tuneops-batcher", daemon=True)
                self._thread.start()
            self._wake.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def close(self) -> None:
        """End the thread once the queue is empty (a later ``submit`` starts a new one)."""
        with self._wake:
            self._closing = True
            self._wake.notify_all()

    def _take(self) -> list[_Request] | None:
        with self._wake:
            while not self._queue:
                if self._closing:
                    self._thread = None
                    return None
                self._wake.wait()
            started = time.monotonic()
            wanted = min(self.max_batch, self._last_size)
            while len(self._queue) < self.max_batch:
                waited = time.monotonic() - started
                left = (self.window if len(self._queue) < wanted else GATHER_SECONDS) - waited
                if left <= 0:
                    break
                self._wake.wait(left)
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            self._last_size = len(batch)
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            self.batch_sizes.append(len(batch))
            try:
                results = generate_batch(self.model, [r.prompt for r in batch], [r.params for r in batch])
            except BaseException as exc:  # every waiting request must hear of it
                for request in batch:
                    request.error = exc
                    request.done.set()
                continue
            for request, result in zip(batch, results, strict=True):
                request.result = result
                request.done.set()


def generate_batch(
    model: LoadedModel, prompts: Sequence[list[int]], params: Sequence[SamplingParams]
) -> list[GenerationResult]:
    """Decode ``prompts`` together, each row with its own sampling parameters and stops."""
    import torch

    n = len(prompts)
    cache = model.new_cache()
    shared = shared_prefix(prompts) if n > 1 else 0
    if shared < MIN_SHARED_PREFIX:
        shared = 0
    else:  # the common start (a system prompt) is computed once and its cache copied to every row
        with torch.no_grad():
            model.next_logits(
                torch.tensor([prompts[0][:shared]]),
                torch.ones((1, shared), dtype=torch.long),
                torch.arange(shared).unsqueeze(0),
                cache,
            )
        cache.batch_repeat_interleave(n)
    tails = [p[shared:] for p in prompts]
    width = max(len(t) for t in tails)
    ids = torch.full((n, width), model.pad_id, dtype=torch.long)
    tail_mask = torch.zeros((n, width), dtype=torch.long)
    for row, tail in enumerate(tails):
        ids[row, width - len(tail) :] = torch.tensor(tail)
        tail_mask[row, width - len(tail) :] = 1
    positions = shared + (tail_mask.cumsum(-1) - 1).clamp(min=0)
    mask = torch.cat([torch.ones((n, shared), dtype=torch.long), tail_mask], dim=1)
    budgets = [model.room(p, q) for p, q in zip(prompts, params, strict=True)]
    generators = [new_generator(p.seed) for p in params]
    stops = [p.stop + model.text_stops for p in params]
    generated: list[list[int]] = [[] for _ in range(n)]
    scored = [ScoredTokens() if p.logprobs else None for p in params]
    finish = ["length"] * n
    active = list(range(n))  # the rows still decoding, in the order of the cache's rows
    step_ids = ids
    with torch.no_grad():
        while active:
            logits = model.next_logits(step_ids, mask, positions, cache)
            keep: list[int] = []
            for slot, row in enumerate(active):
                row_logits = logits[slot].float()
                token = pick_token(row_logits, params[row], generators[row])
                if token in model.stop_ids:
                    finish[row] = "stop"
                    continue
                scores = scored[row]
                if scores is not None:
                    scores.add(model.token_logprob(row_logits, token, params[row].top_logprobs))
                generated[row].append(token)
                text = model.tokenizer.decode(generated[row], skip_special_tokens=True)
                if scores is not None:
                    scores.text_is(len(text))
                if first_stop(text, stops[row]) is not None:
                    finish[row] = "stop"
                elif len(generated[row]) < budgets[row]:
                    keep.append(slot)
            if not keep:
                break
            if len(keep) < len(active):  # finished rows leave the batch and the cache
                index = torch.tensor(keep)
                cache.batch_select_indices(index.to(model.model.device))
                mask, positions = mask[index], positions[index]
                active = [active[slot] for slot in keep]
            step_ids = torch.tensor([[generated[row][-1]] for row in active])
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
            positions = positions[:, -1:] + 1
    results = []
    for row in range(n):
        text = model.tokenizer.decode(generated[row], skip_special_tokens=True)
        cut = first_stop(text, stops[row])
        scores = scored[row]
        results.append(
            GenerationResult(
                text if cut is None else text[:cut],
                finish[row],
                len(prompts[row]),
                len(generated[row]),
                batch_size=n,
                logprobs=None if scores is None else scores.keep(cut),
            )
        )
    return results


def shared_prefix(prompts: Sequence[list[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one of its own (its logits are needed)."""
    shortest = min(len(p) for p in prompts)
    first = prompts[0]
    length = 0
    while length < shortest - 1 and all(p[length] == first[length] for p in prompts):
        length += 1
    return length
