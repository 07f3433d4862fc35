"""Data-parallel placement on Keras' own distribution engine (`keras.distribution`); the one module that sets it up.

`configure` turns `--devices auto|N` (and, for several processes, Keras'
`KERAS_DISTRIBUTION_*` environment variables, which the CLI's
`--num-processes/--process-id/--coordinator` set) into a `Placement`:

- JAX: `keras.distribution.DataParallel` over a 1-D `DeviceMesh` of N devices. Variables are
  replicated, each global batch is split along its first axis; several processes join through
  `keras.distribution.initialize` (collectives over the network, the loopback on one machine).
- TensorFlow and torch: one device, with one line saying why. keras 3.15.1 has no torch
  distribution backend and its `DataParallel` runs on JAX only.

The datasets read the placement to cut each global batch into this process's share, drop a short
last training batch and pad-then-trim evaluation batches (`skinkeras.data.pipeline`), since a batch
that does not divide by the device count raises `IndivisibleError` and leaves the model unusable.
"""

from __future__ import annotations

import dataclasses
import os

import keras

ENV_ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
ENV_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ENV_PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a command runs: how many data-parallel devices, in how many processes, and which one this is.

    Args:
        backend: Keras backend.
        devices: data-parallel replicas over all processes (global batch = devices x per-device batch).
        num_processes: processes taking part.
        process_id: this process (0 writes the run folder).
        platform: device platform ("cpu", "gpu", "tpu").
        note: one line on what was asked and could not be done, or None.
    """

    backend: str
    devices: int = 1
    num_processes: int = 1
    process_id: int = 0
    platform: str = "cpu"
    note: str | None = None

    @property
    def chief(self):
        """Whether this process writes the run folder."""
        return self.process_id == 0

    @property
    def distributed(self):
        """Whether batches are split over more than one device."""
        return self.devices > 1

    def check_batch(self, batch_size, option="--batch-size"):
        """Raises a one-line error when a training batch does not split evenly over the devices.

        Args:
            batch_size: global batch size.
            option: the option named in the message.
        """
        if batch_size % self.devices:
            raise ValueError(f"{option} {batch_size} does not split over {self.devices} devices; "
                             f"give a multiple of {self.devices}")

    def local_slice(self, count):
        """This process's part of a global batch of `count` samples (a multiple of the device count).

        Args:
            count: samples in the global batch.
        """
        share = count // self.num_processes
        return slice(self.process_id * share, (self.process_id + 1) * share)

    def padded_length(self, count):
        """`count` rounded up to a multiple of the device count.

        Args:
            count: number of samples.
        """
        return -(-count // self.devices) * self.devices

    def as_dict(self):
        """The placement as recorded in env.json and metrics.json."""
        return dataclasses.asdict(self)


_current = None


def current():
    """The placement `configure` set last (one device on the current backend before any call)."""
    return _current or Placement(keras.backend.backend())


def parse_devices(devices):
    """'auto' or a positive int from an option or config value; a one-line ValueError otherwise."""
    if devices in (None, "", "auto"):
        return "auto"
    try:
        n = int(devices)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"--devices must be auto or a positive number (got {devices!r})")
    return n


def cluster_from_env():
    """(coordinator address, processes, process id) from Keras' KERAS_DISTRIBUTION_* variables, or None."""
    processes = int(os.environ.get(ENV_PROCESSES) or 1)
    if processes <= 1:
        return None
    address = os.environ.get(ENV_ADDRESSES)
    if not address:
        raise ValueError(f"{processes} processes need --coordinator HOST:PORT (or {ENV_ADDRESSES})")
    if ENV_PROCESS_ID not in os.environ:
        raise ValueError(f"{processes} processes need --process-id K (or {ENV_PROCESS_ID})")
    process_id = int(os.environ[ENV_PROCESS_ID])
    if not 0 <= process_id < processes:
        raise ValueError(f"--process-id must be in 0..{processes - 1} (got {process_id})")
    return address, processes, process_id


def set_cluster_env(num_processes=None, process_id=None, coordinator=None):
    """Writes the multi-process options into Keras' KERAS_DISTRIBUTION_* variables (what `configure` reads).

    Args:
        num_processes: processes taking part, or None (keep the environment's).
        process_id: this process, or None.
        coordinator: HOST:PORT of process 0, or None.
    """
    for name, value in ((ENV_PROCESSES, num_processes), (ENV_PROCESS_ID, process_id), (ENV_ADDRESSES, coordinator)):
        if value is not None:
            os.environ[name] = str(value)


def configure(devices="auto", echo=print):
    """Sets this process's data-parallel placement and returns it; called by each command before it builds a model.

    `auto` takes every visible accelerator (all processes' ones when several processes take part) and
    one device on a CPU-only machine. `N` on a CPU-only JAX machine makes JAX expose N host devices
    (`jax_num_cpu_devices`) when nothing has run on JAX yet, so the multi-device path can be tried
    without an accelerator.

    Args:
        devices: "auto", or the number of devices (int or digit string).
        echo: called with the one-line note when the request cannot be met as asked.
    """
    global _current
    wanted = parse_devices(devices)
    cluster = cluster_from_env()
    backend = keras.backend.backend()
    if backend != "jax":
        if cluster is not None:
            raise ValueError(f"several processes need KERAS_BACKEND=jax: keras {keras.__version__} distributes "
                             f"only JAX ({backend} runs one process)")
        note = None
        gpus = len(tensorflow_gpus()) if wanted == "auto" and backend == "tensorflow" else 0
        if gpus > 1:
            wanted = gpus
        if wanted != "auto" and wanted > 1:
            note = (f"{backend} runs on one device: keras {keras.__version__}'s data-parallel engine "
                    f"(keras.distribution) is JAX-only; use KERAS_BACKEND=jax for {wanted} devices")
            echo(note)
        _current = Placement(backend, note=note)
        return _current

    _current = _configure_jax(wanted, cluster)
    return _current


def tensorflow_gpus():
    """The GPUs Keras sees under TensorFlow ([] without a GPU platform)."""
    try:
        return keras.distribution.list_devices("gpu")
    except Exception:  # no GPU platform at all
        return []


_initialized_cluster = None
_ours = False


def _configure_jax(wanted, cluster):
    """JAX: join the cluster (once per process), pick the devices, set `DataParallel` over them."""
    global _initialized_cluster, _ours
    import jax
    from jax._src import xla_bridge

    if cluster is not None and _initialized_cluster is None:
        address, processes, process_id = cluster
        keras.distribution.initialize(address, processes, process_id)
        _initialized_cluster = cluster
    elif cluster is not None and cluster != _initialized_cluster:
        raise ValueError(f"this process already joined {_initialized_cluster}; start a new process for {cluster}")
    if wanted != "auto" and wanted > 1 and cluster is None and not xla_bridge.backends_are_initialized():
        # Only changes the host platform: on a GPU machine jax.devices() still lists the GPUs.
        jax.config.update("jax_num_cpu_devices", wanted)
    visible = jax.devices()
    platform = visible[0].platform
    if wanted == "auto":
        count = len(visible) if (platform != "cpu" or cluster is not None) else 1
    else:
        count = wanted
        if count > len(visible):
            hint = (" (on a CPU, give --devices before anything has run on JAX, or set "
                    f"JAX_NUM_CPU_DEVICES={count})") if platform == "cpu" else ""
            raise ValueError(f"--devices {count}: only {len(visible)} {platform} device(s) visible{hint}")
    if cluster is not None and count % cluster[1]:
        raise ValueError(f"--devices {count} does not split over {cluster[1]} processes")
    processes, process_id = (cluster[1], cluster[2]) if cluster is not None else (1, 0)
    if count > 1 or processes > 1:
        # auto_shard_dataset=False: our datasets already yield each process's share of the global batch.
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=visible[:count], auto_shard_dataset=False))
        _ours = True
    elif _ours:
        # Undoes only a distribution set here: one a notebook user set stays theirs.
        keras.distribution.set_distribution(None)
        _ours = False
    return Placement("jax", count, processes, process_id, platform)


def reset():
    """Back to one device in this process (a multi-process run's chief evaluates alone on its own device)."""
    global _current, _ours
    keras.distribution.set_distribution(None)
    _ours = False
    base = current()
    _current = dataclasses.replace(base, devices=1, num_processes=1, process_id=0) if base.chief else None
    return current()
