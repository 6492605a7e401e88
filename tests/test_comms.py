"""The interposed communicator against plain mpi4py, under mpiexec at 2-4 ranks.

Every body runs the same transfer twice, through MPI.COMM_WORLD and through ``Comm`` with a
method forced (or chosen), and compares every byte of the receive buffers (gaps included)
and the statuses. Datatypes are random nests drawn from a seed every rank shares; receive
types never name a byte twice (MPI forbids that on the receive side).
"""
from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from mpiforge.testing import run_ranks

TIMEOUT = 180
NAMED = [MPI.BYTE, MPI.SHORT, MPI.INT, MPI.FLOAT, MPI.DOUBLE]


# ---------------------------------------------------------------- helpers (every rank)

def random_type(rng: np.random.Generator, depth: int = 0) -> MPI.Datatype:
    """A random non-overlapping datatype nest (uncommitted; intermediate types are leaked on purpose:
    they are tiny and freeing them is not what is tested here)."""
    if depth >= 2 or rng.random() < 0.25:
        return NAMED[rng.integers(len(NAMED))]
    child = random_type(rng, depth + 1)
    ext = child.extent
    kind = rng.integers(6)
    if kind == 0:
        return child.Create_contiguous(int(rng.integers(1, 4)))
    if kind == 1:
        blen = int(rng.integers(1, 4))
        return child.Create_vector(int(rng.integers(1, 5)), blen, blen + int(rng.integers(0, 3)))
    if kind == 2:
        lens = rng.integers(1, 4, int(rng.integers(1, 5)))
        gaps = rng.integers(0, 3, len(lens))
        disps = np.concatenate([[0], np.cumsum(lens + gaps)[:-1]])
        return child.Create_indexed(lens.tolist(), disps.tolist())
    if kind == 3:
        sizes = [int(s) for s in rng.integers(2, 6, 2)]
        subs = [int(rng.integers(1, s + 1)) for s in sizes]
        starts = [int(rng.integers(0, s - b + 1)) for s, b in zip(sizes, subs)]
        order = MPI.ORDER_C if rng.random() < 0.5 else MPI.ORDER_FORTRAN
        return child.Create_subarray(sizes, subs, starts, order=order)
    if kind == 4:
        other = NAMED[rng.integers(len(NAMED))]
        return MPI.Datatype.Create_struct([1, 2], [0, ext + int(rng.integers(0, 9))], [child, other])
    return child.Create_resized(0, ext + int(rng.integers(0, 17)))


def commit_random(seed: int) -> MPI.Datatype:
    dt = random_type(np.random.default_rng(seed)).Dup()
    return dt.Commit()


def buffers(dt: MPI.Datatype, count: int, rank: int, fill: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A source holding rank-dependent bytes, and a receive buffer full of ``fill``."""
    n = max(dt.extent * count, 1) + 16
    src = ((np.arange(n) * 7 + rank * 31) % 251).astype(np.uint8)
    return src, np.full(n, fill, np.uint8)


def interposed(comm: MPI.Comm, method: str | None):
    from mpiforge.comms.comm import Comm

    return Comm(comm, method=None if method == "auto" else method)


def ring_transfers(comm: MPI.Comm, dt: MPI.Datatype, count: int) -> dict[str, tuple[bytes, int]]:
    """Receive buffers (and element counts from the statuses) of five kinds of ring transfer."""
    from mpiforge.comms.requests import Prequest, Request

    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    out = {}
    src, dst = buffers(dt, count, comm.rank)
    st = MPI.Status()
    comm.Sendrecv([src, count, dt], right, 1, [dst, count, dt], left, 1, st)
    out["sendrecv"] = (dst.tobytes(), st.Get_count(dt))
    src, dst = buffers(dt, count, comm.rank, fill=3)
    reqs = [comm.Irecv([dst, count, dt], left, 2), comm.Isend([src, count, dt], right, 2)]
    sts = [MPI.Status(), MPI.Status()]
    Request.Waitall(reqs, sts)
    out["isend"] = (dst.tobytes(), sts[0].Get_count(dt))
    src, dst = buffers(dt, count, comm.rank, fill=5)
    if comm.rank % 2 == 0:
        comm.Send([src, count, dt], right, 3)
        comm.Recv([dst, count, dt], left, 3, st)
    else:
        comm.Recv([dst, count, dt], left, 3, st)
        comm.Send([src, count, dt], right, 3)
    out["blocking"] = (dst.tobytes(), st.Get_count(dt))
    src, dst = buffers(dt, count, comm.rank, fill=7)
    req = comm.Irecv([dst, count, dt], left, 4)  # posted everywhere first: the Ssends cannot deadlock
    comm.Ssend([src, count, dt], right, 4)
    while not req.Test(st):
        pass
    out["ssend_test"] = (dst.tobytes(), st.Get_count(dt))
    src, dst = buffers(dt, count, comm.rank, fill=9)
    persistent = [comm.Recv_init([dst, count, dt], left, 5), comm.Send_init([src, count, dt], right, 5)]
    got = []
    for step in range(2):
        src += 1
        Prequest.Startall(persistent)
        Request.Waitall(persistent, sts)
        got.append(dst.tobytes())
    for p in persistent:
        p.Free()
    out["persistent"] = (b"".join(got), sts[0].Get_count(dt))
    return out


def body_ring(comm: MPI.Comm, seeds: list[int], methods: list[str]) -> None:
    """Random types around a ring: every method gives plain mpi4py's bytes and counts."""
    packed = 0
    for seed in seeds:
        dt = commit_random(seed)
        for count in (1, 3):
            want = ring_transfers(comm, dt, count)
            for method in methods:
                ours = interposed(comm, method)
                packed += ours.method_for([buffers(dt, count, 0)[0], count, dt]).value == "host"
                got = ring_transfers(ours, dt, count)
                for kind in want:
                    assert got[kind] == want[kind], f"seed {seed} count {count} {method} {kind}: differs from mpi4py"
        dt.Free()
    assert "host" not in methods or packed >= len(seeds), f"only {packed} transfers took the host method"


def body_mixed_methods(comm: MPI.Comm, seeds: list[int]) -> None:
    """A packed send matches a native receive and the other way round (same bytes on the wire)."""
    host, native = interposed(comm, "host"), interposed(comm, "native")
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    for seed in seeds:
        dt = commit_random(seed)
        src, want = buffers(dt, 2, comm.rank)
        comm.Sendrecv([src, 2, dt], right, 0, [want, 2, dt], left, 0)
        for sender, receiver in ((host, native), (native, host)):
            _, got = buffers(dt, 2, comm.rank)
            req = receiver.Irecv([got, 2, dt], left, 1)
            sender.Send([src, 2, dt], right, 1)
            req.Wait()
            assert np.array_equal(got, want), f"seed {seed}: mixed methods differ"
        dt.Free()


def body_collectives(comm: MPI.Comm, seeds: list[int], method: str) -> None:
    """Alltoallv / Alltoallw / Neighbor_alltoallw with derived types equal plain mpi4py's."""
    ours = interposed(comm, method)
    n = comm.size
    for seed in seeds:
        dt = commit_random(seed)
        ext = max(dt.extent, 1)
        counts = [1 + (i + comm.rank) % 2 for i in range(n)]
        rcounts = [1 + (comm.rank + i) % 2 for i in range(n)]  # what peer i sends here
        sdispls = [2 * i for i in range(n)]
        rdispls = [2 * i for i in range(n)]
        src, _ = buffers(dt, 2 * n + 2, comm.rank)
        results = []
        for c in (comm, ours):
            dst = np.full_like(src, 0xEE)
            c.Alltoallv([src, counts, sdispls, dt], [dst, rcounts, rdispls, dt])
            dst2 = np.full_like(src, 0xEE)
            c.Alltoallw([src, counts, [d * ext for d in sdispls], [dt] * n],
                        [dst2, rcounts, [d * ext for d in rdispls], [dt] * n])
            results.append((dst, dst2))
        assert np.array_equal(results[0][0], results[1][0]), f"seed {seed}: Alltoallv differs"
        assert np.array_equal(results[0][1], results[1][1]), f"seed {seed}: Alltoallw differs"
        if method == "host":
            assert ours._w_side([src, counts, sdispls, dt], True, False)[1] is not None, "host method not taken"
        neighbours = []
        for c in (comm.Create_cart([n], [True]), ours.Create_cart([n], [True])):
            dst = np.full_like(src, 0xEE)
            c.Neighbor_alltoallw([src, [1, 1], [0, 2 * ext], [dt, dt]], [dst, [1, 1], [0, 2 * ext], [dt, dt]])
            neighbours.append(dst)
            c.Free()
        assert np.array_equal(*neighbours), f"seed {seed}: Neighbor_alltoallw differs"
        dt.Free()


def error_class(fn) -> int | None:
    try:
        fn()
    except MPI.Exception as exc:
        return exc.Get_error_class()
    return None


def body_bad_input(comm: MPI.Comm, method: str) -> None:
    """Truncation, invalid ranks and tags: the error classes plain mpi4py raises, no corruption."""
    ours = interposed(comm, method)
    dt = MPI.DOUBLE.Create_vector(4, 1, 2).Commit()
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    big = np.arange(16.0)
    for c in (comm, ours):
        dst = np.full(8, -1.0)
        req = c.Irecv([dst, 1, dt], left, 9)
        c.Send([big, 8, MPI.DOUBLE], right, 9)  # 8 doubles for a 4-double receive
        code = error_class(req.Wait)
        assert code == MPI.ERR_TRUNCATE, f"{type(c).__name__}: got error class {code}"
        if c is ours and method == "host":
            assert np.all(dst == -1.0), "a truncated staged receive must leave the buffer untouched"
        bad_rank = error_class(lambda: c.Send([big, 1, dt], comm.size + 5, 0))
        assert bad_rank == MPI.ERR_RANK, f"invalid rank: error class {bad_rank}"
        bad_tag = error_class(lambda: c.Send([big, 1, dt], right, -7))
        assert bad_tag == MPI.ERR_TAG, f"invalid tag: error class {bad_tag}"
    dt.Free()
    comm.Barrier()


def body_pack_and_buffered(comm: MPI.Comm, seeds: list[int]) -> None:
    """Comm.Pack/Unpack/Pack_size equal MPI_Pack's; Bsend and Rsend deliver what Send does."""
    ours = interposed(comm, "host")
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    for seed in seeds:
        dt = commit_random(seed)
        src, _ = buffers(dt, 2, comm.rank)
        size = dt.Pack_size(2, comm)
        assert ours.Pack_size(2, dt) == size
        want, got = bytearray(size + 8), bytearray(size + 8)
        window = MPI.buffer.fromaddress(src.ctypes.data, 2 * dt.extent, readonly=True)
        end = dt.Pack(window, want, 4, comm)
        assert ours.Pack([src, 2, dt], got, 4) == end and got == want, f"seed {seed}: Pack differs"
        back_want, back_got = buffers(dt, 2, 0, fill=1)[1], buffers(dt, 2, 0, fill=1)[1]
        dt.Unpack(want, 4, MPI.buffer.fromaddress(back_want.ctypes.data, 2 * dt.extent), comm)
        assert ours.Unpack(got, 4, [back_got, 2, dt]) == end
        assert np.array_equal(back_got, back_want), f"seed {seed}: Unpack differs"
        _, plain = buffers(dt, 2, comm.rank)
        comm.Sendrecv([src, 2, dt], right, 0, [plain, 2, dt], left, 0)
        MPI.Attach_buffer(bytearray(4 * size + 4 * MPI.BSEND_OVERHEAD + 64))
        _, got = buffers(dt, 2, comm.rank)
        req = ours.Irecv([got, 2, dt], left, 1)
        comm.Barrier()  # every receive is posted: a ready send is legal now
        ours.Bsend([src, 2, dt], right, 1)
        req.Wait()
        assert np.array_equal(got, plain), f"seed {seed}: Bsend differs"
        _, got = buffers(dt, 2, comm.rank)
        req = ours.Irecv([got, 2, dt], left, 2)
        comm.Barrier()
        ours.Rsend([src, 2, dt], right, 2)
        req.Wait()
        assert np.array_equal(got, plain), f"seed {seed}: Rsend differs"
        MPI.Detach_buffer()
        dt.Free()
    named, out = np.arange(3.0), bytearray(16)
    assert ours.Pack([named, 2, MPI.DOUBLE], out, 0) == 16 and bytes(out) == named[:2].tobytes()


def body_short_messages(comm: MPI.Comm, method: str) -> None:
    """Fewer bytes than the receive asked for, down to part of an element: same buffer, same
    Get_count / Get_elements as plain mpi4py."""
    ours = interposed(comm, method)
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    dt = MPI.DOUBLE.Create_vector(3, 1, 2).Commit()  # 3 doubles per element, extent 5 doubles
    for sent in (0, 2, 3, 5, 6):
        results = []
        for c in (comm, ours):
            dst, st = np.full(12, -1.0), MPI.Status()
            req = c.Irecv([dst, 2, dt], left, 3)
            c.Send([np.arange(sent, dtype=np.float64) + 10 * comm.rank, MPI.DOUBLE], right, 3)
            req.Wait(st)
            results.append((dst.tobytes(), st.Get_count(dt), st.Get_elements(MPI.DOUBLE), st.Get_count(MPI.BYTE)))
        assert results[0] == results[1], f"{method}, {sent} doubles sent: {results}"
    dt.Free()


def subarray_reference(comm: MPI.Comm, method: str, sizes: list[int], subs: list[int], starts: list[int]):
    """(interposed comm, right, left, a float64 subarray type, rank-dependent source values,
    what plain mpi4py receives from the left neighbour) for a ring transfer."""
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    dt = MPI.DOUBLE.Create_subarray(sizes, subs, starts).Commit()
    n = int(np.prod(sizes))
    src = np.arange(float(n)) + 100 * comm.rank
    want = np.full(n, -1.0)
    comm.Sendrecv([src, 1, dt], right, 0, [want, 1, dt], left, 0)
    return interposed(comm, method), right, left, dt, src, want


def body_device(comm: MPI.Comm, method: str) -> None:
    """Fake device arrays through the device kernels (numba's simulator) equal host transfers."""
    from mpiforge.bindings.fake_cuda import FakeDeviceArray

    ours, right, left, dt, src, want = subarray_reference(comm, method, [4, 5], [2, 3], [1, 1])
    got = FakeDeviceArray(np.full(20, -1.0))
    assert ours.method_for([FakeDeviceArray(src), 1, dt]).value == method
    st = MPI.Status()
    ours.Sendrecv([FakeDeviceArray(src), 1, dt], right, 0, [got, 1, dt], left, 0, st)
    assert np.array_equal(got.host, want), f"{method}: device transfer differs"
    assert st.Get_count(dt) == 1
    plain = FakeDeviceArray(np.zeros(20))
    ours.Sendrecv(FakeDeviceArray(src), right, 1, plain, left, 1)  # contiguous device buffers
    assert np.array_equal(plain.host, np.arange(20.0) + 100 * left)
    dt.Free()


class DLPackOnly:
    """Host memory seen only through DLPack (as a CPU torch tensor is)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


def body_dlpack(comm: MPI.Comm) -> None:
    """Buffers that offer only DLPack go through the host method like numpy arrays."""
    ours = interposed(comm, "host")
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    dt = MPI.DOUBLE.Create_vector(3, 2, 4).Commit()
    src, got, want = np.arange(12.0) + comm.rank, np.full(12, -1.0), np.full(12, -1.0)
    comm.Sendrecv([src, 1, dt], right, 0, [want, 1, dt], left, 0)
    assert ours.method_for([DLPackOnly(src), 1, dt]).value == "host"
    ours.Sendrecv([DLPackOnly(src), 1, dt], right, 0, [DLPackOnly(got), 1, dt], left, 0)
    assert np.array_equal(got, want)
    dt.Free()


def body_torch(comm: MPI.Comm, method: str) -> None:
    """PyTorch CPU tensors (read through DLPack) with a derived datatype: the bytes mpi4py moves
    for numpy arrays of the same values."""
    import torch

    ours, right, left, dt, src, want = subarray_reference(comm, method, [4, 6], [2, 3], [1, 2])
    got = torch.full((24,), -1.0, dtype=torch.float64)
    assert ours.method_for([torch.from_numpy(src), 1, dt]).value == method
    req = ours.Irecv([got, 1, dt], left, 1)
    ours.Send([torch.from_numpy(src.copy()), 1, dt], right, 1)
    req.Wait()
    assert np.array_equal(got.numpy(), want), f"{method}: torch transfer differs"
    dt.Free()


def body_no_gpu_library(comm: MPI.Comm) -> None:
    """A device buffer with no GPU and no simulator: a clear ERR_BUFFER, never a device pointer to MPI."""
    from mpiforge.bindings.fake_cuda import FakeDeviceArray

    ours = interposed(comm, None)
    dt = MPI.DOUBLE.Create_vector(2, 1, 2).Commit()
    code = error_class(lambda: ours.Send([FakeDeviceArray(np.zeros(4)), 1, dt], comm.rank, 0))
    assert code == MPI.ERR_BUFFER, f"got {code}"
    dt.Free()


# ---------------------------------------------------------------- tests (pytest process)

@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_random_types_every_method(nprocs: int) -> None:
    run_ranks(body_ring, nprocs, TIMEOUT, args=(list(range(nprocs * 10, nprocs * 10 + 12)), ["native", "host", "auto"]))


def body_fast_path(comm: MPI.Comm, expected: bool) -> None:
    from mpiforge.comms import comm as comm_module

    assert comm_module.FAST_PATH is expected
    body_ring(comm, [5, 6, 7], ["native", "host"])


def body_keywords(comm: MPI.Comm, method: str) -> None:
    """mpi4py-tutorial style calls with keywords (dest=, source=, tag=) through the hot path."""
    ours = interposed(comm, method)
    dt = MPI.INT.Create_vector(3, 1, 2).Commit()
    for c in (ours, ours):  # twice: the second time the route is cached
        data = np.arange(6, dtype=np.int32) + 10 * comm.rank
        got = np.full(6, -1, np.int32)
        if comm.rank == 0:
            c.Send([data, 1, dt], dest=1, tag=11)
            c.Send(buf=data, dest=1, tag=12)
        else:
            c.Recv([got, 1, dt], source=0, tag=11)
            assert got.tolist() == [0, -1, 2, -1, 4, -1]
            c.Recv(buf=got, source=0, tag=12)
            assert got.tolist() == list(range(6))
            req = c.Irecv([got, 1, dt], source=0, tag=13)
        if comm.rank == 0:
            c.Isend([data, 1, dt], dest=1, tag=13).Wait()
        else:
            req.Wait()
    dt.Free()


@pytest.mark.parametrize("method", ["native", "host"])
def test_keyword_calls(method: str) -> None:
    run_ranks(body_keywords, 2, TIMEOUT, args=(method,))


@pytest.mark.parametrize("fast", ["0", "1"])
def test_c_fast_path_and_python_path_agree(fast: str) -> None:
    from mpiforge.comms import comm as comm_module

    if fast == "1" and not comm_module.FAST_PATH:
        pytest.skip("mpiforge.comms._fastpath was not built here (no C compiler at install time)")
    run_ranks(body_fast_path, 2, TIMEOUT, args=(fast == "1",), env={"MPIFORGE_FASTPATH": fast})


def test_packed_and_native_sides_interoperate() -> None:
    run_ranks(body_mixed_methods, 2, TIMEOUT, args=(list(range(40, 52)),))


@pytest.mark.parametrize("nprocs,method", [(2, "host"), (3, "host"), (4, "auto"), (2, "native")])
def test_v_and_w_collectives(nprocs: int, method: str) -> None:
    run_ranks(body_collectives, nprocs, TIMEOUT, args=(list(range(60, 68)), method))


@pytest.mark.parametrize("method", ["host", "native"])
def test_bad_input_same_errors(method: str) -> None:
    run_ranks(body_bad_input, 2, TIMEOUT, args=(method,))


def test_pack_unpack_bsend_rsend() -> None:
    run_ranks(body_pack_and_buffered, 3, TIMEOUT, args=(list(range(80, 88)),))


@pytest.mark.parametrize("method", ["host", "native"])
def test_short_messages_and_partial_elements(method: str) -> None:
    run_ranks(body_short_messages, 2, TIMEOUT, args=(method,))


@pytest.mark.parametrize("method,cuda_aware", [("staged", "0"), ("oneshot", "0"), ("device", "1"), ("native", "1")])
def test_device_methods_in_simulator(method: str, cuda_aware: str) -> None:
    env = {"NUMBA_ENABLE_CUDASIM": "1", "MPIFORGE_CUDA_AWARE": cuda_aware, "MPIFORGE_METHOD": method}
    run_ranks(body_device, 2, TIMEOUT, args=(method,), env=env)


def test_dlpack_host_buffers() -> None:
    run_ranks(body_dlpack, 2, TIMEOUT)


@pytest.mark.parametrize("method", ["host", "native"])
def test_torch_cpu_tensors(method: str) -> None:
    pytest.importorskip("torch")
    run_ranks(body_torch, 2, TIMEOUT, args=(method,))


def test_device_buffer_without_gpu_runtime() -> None:
    run_ranks(body_no_gpu_library, 1, TIMEOUT, env={"NUMBA_ENABLE_CUDASIM": "0", "MPIFORGE_CUDA_AWARE": "0"})
