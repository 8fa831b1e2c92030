"""Names of every Triton model and tensor in the pipeline: the single source of truth.

The model repository's ``config.pbtxt`` files, the ONNX exports and the client all use these names; a test
parses each config with protobuf and each ONNX graph and checks them against this module. It imports
nothing heavy so the client can use it without torch.
"""
from __future__ import annotations

from dataclasses import dataclass

TASKS = ("caption", "od", "vqa")          # index order = router logit order = the notebook's labels 0, 1, 2
TASK_TAGS = {"caption": "[CAPTION]", "od": "[OD]", "vqa": "[VQA]"}
NO_TASK = -1                               # "no tag / no override" in INT32 task-id tensors

# How the task was chosen, reported in the response's `routing` field.
ROUTED_BY_ROUTER = "router"
ROUTED_BY_ROUTER_UNCERTAIN = "router_uncertain"   # the router's top probability is below the server's threshold
ROUTED_BY_TAG = "tag"
ROUTED_BY_OVERRIDE = "override"


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str                 # Triton dtype name without the TYPE_ prefix: BYTES, FP32, INT32, INT64, BOOL
    dims: tuple[int, ...]      # per request, without the batch axis; -1 = variable
    optional: bool = False


# --- ensemble "vlm": what clients send and receive -------------------------------------------------------
ENSEMBLE = "vlm"
IMAGE = Tensor("image", "BYTES", (1,))
QUERY = Tensor("query", "BYTES", (1,))
TASK_OVERRIDE = Tensor("task_override", "BYTES", (1,), optional=True)
MAX_NEW_TOKENS = Tensor("max_new_tokens", "INT32", (1,), optional=True)
TEMPERATURE = Tensor("temperature", "FP32", (1,), optional=True)
TOP_P = Tensor("top_p", "FP32", (1,), optional=True)
SEED = Tensor("seed", "INT64", (1,), optional=True)
# OD answers are decoded under a JSON grammar (valid by construction) unless a request sends false.
JSON_CONSTRAINT = Tensor("json_constraint", "BOOL", (1,), optional=True)
ENSEMBLE_INPUTS = (IMAGE, QUERY, TASK_OVERRIDE, MAX_NEW_TOKENS, TEMPERATURE, TOP_P, SEED, JSON_CONSTRAINT)
GENERATION_OPTIONS = (MAX_NEW_TOKENS, TEMPERATURE, TOP_P, SEED, JSON_CONSTRAINT)

TASK = Tensor("task", "BYTES", (1,))
ROUTING = Tensor("routing", "BYTES", (1,))
CONFIDENCE = Tensor("confidence", "FP32", (1,))
TEXT = Tensor("text", "BYTES", (1,))
OBJECTS = Tensor("objects", "BYTES", (1,))              # JSON list of {"label", "bbox"}; "[]" for other tasks
JSON_VALID = Tensor("json_valid", "BOOL", (1,))         # OD: raw text parsed as JSON without repair
# JSON list, one entry per answered task (two or three for a compound query): {"task", "text", "objects",
# "json_valid", "finish_reason", "completion_tokens"}.
PARTS = Tensor("parts", "BYTES", (1,))
FINISH_REASON = Tensor("finish_reason", "BYTES", (1,))  # "stop" (EOS) or "length"
PROMPT_TOKENS = Tensor("prompt_tokens", "INT32", (1,))
COMPLETION_TOKENS = Tensor("completion_tokens", "INT32", (1,))
ENSEMBLE_OUTPUTS = (TASK, ROUTING, CONFIDENCE, TEXT, OBJECTS, JSON_VALID, FINISH_REASON, PROMPT_TOKENS,
                    COMPLETION_TOKENS, PARTS)
# JSON {"queue_s", "prefill_s", "decode_s"}: where the request's time went in generator_engine
# (minivlm/serving/timings.py). Every answer has it; clients request it only to trace a request (`vlm ask
# --trace`), so a plain answer is exactly ENSEMBLE_OUTPUTS.
TIMINGS = Tensor("timings", "BYTES", (1,))
ANSWER_OUTPUTS = ENSEMBLE_OUTPUTS + (TIMINGS,)

# --- ensemble "vlm_stream": the same answer, its text streamed as it is decoded (gRPC streaming only) -------
# Decoupled: zero or more responses carrying only TEXT, each the next piece of the first answer part's raw
# decoded text, then one final response with every ENSEMBLE_OUTPUTS tensor: the whole answer, exactly as "vlm"
# gives it (its TEXT is cleaned, so it may differ from the pieces joined by surrounding whitespace or tag residue).
STREAM_ENSEMBLE = "vlm_stream"
STREAM = Tensor("stream", "BOOL", (1,), optional=True)  # true: send text pieces as they are decoded
STREAM_INPUTS = ENSEMBLE_INPUTS + (STREAM,)

# --- query_preprocess: query text -> router tokens, explicit tag / override, cleaned question -------------
QUERY_PREPROCESS = "query_preprocess"
INPUT_IDS = Tensor("input_ids", "INT64", (-1,))
ATTENTION_MASK = Tensor("attention_mask", "INT64", (-1,))
QUESTION = Tensor("question", "BYTES", (1,))            # the query with any explicit tag removed
FORCED_TASK = Tensor("forced_task", "INT32", (1,))      # task id from a tag or override, NO_TASK otherwise
FORCED_BY = Tensor("forced_by", "BYTES", (1,))          # ROUTED_BY_TAG / ROUTED_BY_OVERRIDE / ""
QUERY_PREPROCESS_INPUTS = (QUERY, TASK_OVERRIDE)
QUERY_PREPROCESS_OUTPUTS = (INPUT_IDS, ATTENTION_MASK, QUESTION, FORCED_TASK, FORCED_BY)

# --- preprocess: the vlm ensemble's first step, the image and the query checked and prepared together ------
# Every bad image or query fails here, before any other step of the request runs (see vlm/config.pbtxt:
# Triton 2.51 can corrupt or hang an ensemble when a step fails while a parallel one is in flight).
PREPROCESS = "preprocess"
PIXEL_VALUES = Tensor("pixel_values", "FP32", (3, 224, 224))
PREPROCESS_INPUTS = (IMAGE, QUERY, TASK_OVERRIDE)
PREPROCESS_OUTPUTS = (PIXEL_VALUES,) + QUERY_PREPROCESS_OUTPUTS
# What preprocess names in its errors, so a message says which half of the request is at fault:
# "image_preprocess: image is 1x1 pixels ..." or "query_preprocess: query is empty".
IMAGE_PREPROCESS = "image_preprocess"

# --- router: query tokens -> calibrated task probabilities ----------------------------------------------
ROUTER = "router"
TASK_PROBS = Tensor("task_probs", "FP32", (len(TASKS),))
# Independent per-task probabilities ("does the query ask for this task?"): two or more above the
# generator's threshold make a compound query ("describe the picture and find all the objects").
TASK_SCORES = Tensor("task_scores", "FP32", (len(TASKS),))
ROUTER_INPUTS = (INPUT_IDS, ATTENTION_MASK)
ROUTER_OUTPUTS = (TASK_PROBS, TASK_SCORES)

# --- vision_encoder: ViT + projector ---------------------------------------------------------------------
VISION_ENCODER = "vision_encoder"
IMAGE_EMBEDS = Tensor("image_embeds", "FP32", (-1, -1))   # (197, language hidden size) at full size
VISION_INPUTS = (PIXEL_VALUES,)
VISION_OUTPUTS = (IMAGE_EMBEDS,)

# --- generator: routing decision + SmolLM decoding -------------------------------------------------------
GENERATOR = "generator"
GENERATOR_INPUTS = (IMAGE_EMBEDS, TASK_PROBS, TASK_SCORES, QUESTION, FORCED_TASK, FORCED_BY) + GENERATION_OPTIONS \
    + (STREAM,)
GENERATOR_OUTPUTS = ANSWER_OUTPUTS

# --- generator_engine: what the generator forwards every request to ---------------------------------------
# Decoupled (one final response per request, sent when its rows finish) with a continuously running batch;
# the generator stays non-decoupled so the ensemble keeps answering unary infer calls.
GENERATOR_ENGINE = "generator_engine"

# --- ensemble "route": the router on its own, for clients that only want the task ------------------------
ROUTE_ENSEMBLE = "route"
ROUTE_INPUTS = (QUERY, TASK_OVERRIDE)
ROUTE_OUTPUTS = (TASK_PROBS, TASK_SCORES, FORCED_TASK, FORCED_BY)

MODELS = {
    PREPROCESS: (PREPROCESS_INPUTS, PREPROCESS_OUTPUTS),
    QUERY_PREPROCESS: (QUERY_PREPROCESS_INPUTS, QUERY_PREPROCESS_OUTPUTS),
    ROUTER: (ROUTER_INPUTS, ROUTER_OUTPUTS),
    VISION_ENCODER: (VISION_INPUTS, VISION_OUTPUTS),
    GENERATOR: (GENERATOR_INPUTS, GENERATOR_OUTPUTS),
    GENERATOR_ENGINE: (GENERATOR_INPUTS, GENERATOR_OUTPUTS),
    ENSEMBLE: (ENSEMBLE_INPUTS, ANSWER_OUTPUTS),
    STREAM_ENSEMBLE: (STREAM_INPUTS, ANSWER_OUTPUTS),
    ROUTE_ENSEMBLE: (ROUTE_INPUTS, ROUTE_OUTPUTS),
}
ENSEMBLES = (ENSEMBLE, STREAM_ENSEMBLE, ROUTE_ENSEMBLE)

# Names that prefix the server's error messages ("<step>: <message>"): every composing model (internal
# errors name the model), and IMAGE_PREPROCESS / QUERY_PREPROCESS for a bad image or query.
ERROR_STEPS = (IMAGE_PREPROCESS,) + tuple(name for name in MODELS if name not in ENSEMBLES)
