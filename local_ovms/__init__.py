"""A local OpenVINO Model Server-compatible server for MediaPipe Python-node servables.

Run it as ``python -m local_ovms --config_path CONFIG --port 9000 --rest_port 8000``. It loads the
``mediapipe_config_list`` graphs of an OVMS ``config.json``, imports each ``PythonExecutorCalculator``
node's handler (``class OvmsPythonModel``), and serves them over KServe gRPC
(``inference.GRPCInferenceService``, the protos ``tritonclient`` ships) and KServe v2 REST, with
Prometheus ``/metrics`` on the REST port. The behaviour it copies is written down in
``/work/shared/ovms-python-node-contract.md``.

Behaviour worth knowing (details in the modules):

- Graphs that break the contract are refused at load with ``file:line: reason`` in the log and in the
  UNAVAILABLE error of their infer calls; the other graphs of the config still load.
- A stream gets its own graph instance. Every output packet is its own ``ModelStreamInferResponse``
  with the ``OVMS_MP_TIMESTAMP`` parameter. New data while a generator runs gets the error
  "Node is already processing data. Create new stream for another request.". A failing request is
  answered with ``error_message`` and the stream serves the next request on a fresh graph instance.
- On cancel or disconnect the generator is closed (``GeneratorExit`` at its ``yield``) as soon as its
  current ``next()`` returns.
- Unary infer (gRPC and REST) of a generative (LOOPBACK) graph fails with INVALID_ARGUMENT naming
  ModelStreamInfer; errors raised by ``execute`` are INVALID_ARGUMENT (HTTP 400) carrying their message.
- ``--max_message_mb`` caps gRPC messages (RESOURCE_EXHAUSTED) and REST bodies (HTTP 413).
- SIGTERM/SIGINT: no new requests (UNAVAILABLE, ServerReady false), running requests get
  ``--grace_period`` seconds, then every handler's ``finalize()`` runs, generators get 2 s more to
  deliver, the rest are cut, and the process exits 0.

Modules: ``config`` (config.json), ``pbtxt`` (protobuf text format), ``graph`` (graph model and
validation), ``pyovms`` (the ``pyovms.Tensor`` stand-in), ``handler`` (handler import and life cycle),
``executor`` (one graph instance per stream), ``registry`` (loaded graphs and their state), ``kserve``
(request/response conversion), ``grpc_service``, ``rest``, ``metrics``, ``lifecycle`` (running work and
shutdown drain), ``__main__`` (command line and signals).
"""
