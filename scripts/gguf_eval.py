"""What the model evaluation scripts share (eval_smollm2.py, eval_decode.py, eval_calibration.py):
their common arguments and loading a GGUF causal LM through transformers, de-quantized to float32."""
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def add_common_args(ap, name, label=""):
    """--gguf, --out, --label (the model, for the JSON) and --name (stem of the output files)."""
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--label", default=label, help="the model, for the JSON")
    ap.add_argument("--name", default=name, help="stem of the output files")


def load_gguf(path):
    """(tokenizer, model in float32, eval mode), with torch on every CPU core."""
    torch.set_num_threads(os.cpu_count() or 1)
    d, f = os.path.split(os.path.abspath(path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    return tok, model
