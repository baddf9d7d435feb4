"""The model worker's queue: decoder work of encoded sessions first, also inside another's encode."""

from __future__ import annotations

import asyncio
import threading

from torch import nn

from sammed.inference import Session
from sammed.server.worker import ModelWorker


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Identity() for _ in range(3))


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = Encoder()
        self.weight = nn.Parameter(nn.init.zeros_(nn.Linear(1, 1).weight))


def note(log: list[str], text: str, session: Session) -> None:
    log.append(text)


def _session() -> Session:
    return Session.__new__(Session)  # only its identity matters to the worker


def test_decoder_work_goes_first_and_a_session_keeps_its_order() -> None:
    log: list[str] = []

    async def scenario() -> None:
        worker = ModelWorker(Model(), "test", random_weights=True)
        a, b, c = _session(), _session(), _session()
        await worker.run(note, log, "b0", b)  # b and c have run: their windows are encoded
        await worker.run(note, log, "c0", c)
        gate = threading.Event()
        blocker = asyncio.ensure_future(worker.run(gate.wait))  # holds the thread while calls queue
        await asyncio.sleep(0.05)
        calls = [
            asyncio.ensure_future(worker.run(note, log, "a1 first click", a)),
            asyncio.ensure_future(worker.run(note, log, "b1 refine", b)),
            asyncio.ensure_future(worker.run(note, log, "b2 refine", b)),
            asyncio.ensure_future(worker.run(note, log, "c1 refine", c)),
        ]
        await asyncio.sleep(0.05)
        assert worker.queued() == (3, 1)
        gate.set()
        await asyncio.gather(blocker, *calls)
        worker.close()

    asyncio.run(scenario())
    assert log[2:] == ["b1 refine", "b2 refine", "c1 refine", "a1 first click"]


def test_refinement_runs_between_encoder_blocks_of_another_session() -> None:
    log: list[str] = []
    model = Model()
    started, go = threading.Event(), threading.Event()

    def encode(session: Session) -> None:
        log.append("encode starts")
        started.set()
        go.wait()
        for block in model.image_encoder.blocks:
            block(0)
        log.append("encode ends")

    async def scenario() -> None:
        worker = ModelWorker(model, "test", random_weights=True)
        a, b = _session(), _session()
        await worker.run(note, log, "b0", b)
        encoding = asyncio.ensure_future(worker.run(encode, a))
        await asyncio.get_running_loop().run_in_executor(None, started.wait)
        refining = asyncio.ensure_future(worker.run(note, log, "b1 refine", b))
        own = asyncio.ensure_future(worker.run(note, log, "a2 after its encode", a))  # same session: waits
        await asyncio.sleep(0.05)
        go.set()
        await asyncio.gather(encoding, refining, own)
        worker.close()

    asyncio.run(scenario())
    assert log == ["b0", "encode starts", "b1 refine", "encode ends", "a2 after its encode"]


def test_a_failed_call_reaches_its_caller_and_the_worker_goes_on() -> None:
    async def scenario() -> None:
        worker = ModelWorker(Model(), "test", random_weights=True)
        try:
            await worker.run(int, "not a number")
        except ValueError:
            pass
        else:
            raise AssertionError("the error was lost")
        assert await worker.run(int, "7") == 7
        worker.close()

    asyncio.run(scenario())


def test_encodes_are_not_starved_by_a_stream_of_refinements() -> None:
    """Decoder calls waiting when an encode is first passed over go first; later ones do not."""
    log: list[str] = []

    async def scenario() -> None:
        worker = ModelWorker(Model(), "test", random_weights=True)
        a, b, c = _session(), _session(), _session()
        await worker.run(note, log, "b0", b)
        await worker.run(note, log, "c0", c)
        gate = threading.Event()
        blocker = asyncio.ensure_future(worker.run(gate.wait))
        await asyncio.sleep(0.05)
        first = asyncio.ensure_future(worker.run(note, log, "a1 first click", a))
        refine = asyncio.ensure_future(worker.run(note, log, "b1 refine", b))
        await asyncio.sleep(0.05)
        gate.set()
        await refine  # b1 has run: the encode was passed over once, with c's next call not yet waiting
        late = asyncio.ensure_future(worker.run(note, log, "c1 refine, later", c))
        await asyncio.gather(blocker, first, late)
        worker.close()

    asyncio.run(scenario())
    assert log[2:] == ["b1 refine", "a1 first click", "c1 refine, later"]


def test_a_refinement_run_inside_another_encode_gives_the_same_mask() -> None:
    """Real sessions on the tiny model: b's refinement runs between the blocks of a's encode and
    its mask equals the one computed with nothing else running."""
    import numpy as np
    import torch

    from sammed.data import SAMPLE_CT, SAMPLE_CT_LIVER_VOXEL
    from sammed.io import read_image
    from sammed.models import build_model

    torch.manual_seed(0)
    model = build_model("sam-med3d-tiny")
    image = read_image(SAMPLE_CT)
    click = tuple(SAMPLE_CT_LIVER_VOXEL)
    refine = (click[0] + 5, click[1] - 4, click[2])
    alone = Session(model, image)
    alone.add_point(click)
    expected = alone.add_point(refine, positive=False)

    armed, queued, nested = threading.Event(), threading.Event(), []

    def hold(*_) -> None:  # a's encode waits at its first block until b's refinement is queued
        if armed.is_set():
            queued.wait(5)

    model.image_encoder.blocks[0].register_forward_pre_hook(hold)  # runs before the worker's hook
    log: list[str] = []

    async def scenario() -> np.ndarray:
        worker = ModelWorker(model, "tiny", random_weights=True)
        a, b = Session(model, image), Session(model, image)
        await worker.run(b.add_point, click)
        armed.set()
        encoding = asyncio.ensure_future(worker.run(a.add_point, (click[0] - 20, click[1], click[2])))
        await asyncio.sleep(0.05)

        def refine_b(session: Session) -> np.ndarray:
            nested.append(worker._nested)
            log.append("b refines")
            return session.add_point(refine, positive=False)

        refining = asyncio.ensure_future(worker.run(refine_b, b))
        await asyncio.sleep(0.05)
        queued.set()
        mask, _ = await asyncio.gather(refining, encoding)
        worker.close()
        return mask

    mask = asyncio.run(scenario())
    assert nested == [True]
    assert np.array_equal(mask, expected)
