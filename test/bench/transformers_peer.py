"""The transformers side of `npm run bench`: Hugging Face transformers captioning the same checkpoint and image.

    python transformers_peer.py --checkpoint DIR --image IMG --mode float32|bfloat16|torch-int8 --threads 2 \
        --settings JSON --repeat 3

One mode per process, so each peak RSS is its own. Prints progress on stderr and one JSON object on the last line of
stdout: load time, the median of the 20-token greedy captions (min = max = 20 new tokens, as ours), the median caption
with the extension's default settings, the median second question on the same image (transformers has no image cache:
it runs the vision encoder again, which is what a user of it gets), and the process's peak RSS.

torch-int8 is torch's dynamic quantization of every nn.Linear to int8 (per-tensor activations, per-channel
weights), the fastest CPU mode transformers users have; it quantizes after loading in float32.
"""

import argparse
import json
import resource
import statistics
import sys
import time

import torch
from PIL import Image
from transformers import Blip2ForConditionalGeneration, Blip2Processor


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--mode", required=True, choices=["float32", "bfloat16", "torch-int8"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settings", required=True, help="JSON: caption_tokens, default and question (generate() kwargs), question_text")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    settings = json.loads(a.settings)
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)

    t0 = time.perf_counter()
    dtype = torch.bfloat16 if a.mode == "bfloat16" else torch.float32
    model = Blip2ForConditionalGeneration.from_pretrained(a.checkpoint, dtype=dtype)
    model.eval()
    if a.mode == "torch-int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    processor = Blip2Processor.from_pretrained(a.checkpoint)
    load_ms = (time.perf_counter() - t0) * 1000
    log(f"transformers {a.mode}: loaded in {load_ms / 1000:.1f} s, peak RSS {peak_rss_mb():.0f} MiB")

    image = Image.open(a.image).convert("RGB")

    def run(text, **kwargs):
        inputs = processor(images=image, text=text, return_tensors="pt")
        if a.mode == "bfloat16":
            inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**inputs, **kwargs)
        ms = (time.perf_counter() - start) * 1000
        return ms, out.shape[-1] - inputs["input_ids"].shape[-1]

    n = settings["caption_tokens"]
    greedy = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1)
    question = settings["question"]
    question_text = settings["question_text"]
    default = settings["default"]

    captions, defaults, questions = [], [], []
    # One warm-up caption first: the first generate() pays one-time costs (thread pools, allocator growth).
    ms, _ = run("", **greedy)
    log(f"  warm-up caption {ms:.0f} ms")
    for i in range(a.repeat):
        ms, tokens = run("", **greedy)
        captions.append(ms)
        ms_d, _ = run("", **default)
        defaults.append(ms_d)
        ms_q, _ = run(question_text, **question)
        questions.append(ms_q)
        log(f"  run {i + 1}: caption {ms:.0f} ms ({tokens} tokens), default settings {ms_d:.0f} ms, question {ms_q:.0f} ms")

    print(json.dumps({
        "engine": "transformers",
        "precision": a.mode,
        "threads": a.threads,
        "torch": torch.__version__,
        "load_ms": load_ms,
        "caption_ms": statistics.median(captions),
        "caption_runs_ms": captions,
        "default_settings_caption_ms": statistics.median(defaults),
        "default_settings_runs_ms": defaults,
        "second_question_ms": statistics.median(questions),
        "second_question_runs_ms": questions,
        "peak_rss_mb": peak_rss_mb(),
    }))


if __name__ == "__main__":
    main()
