"""``INTEGRATION.md``: the few lines an app needs to load this package's model, for its platform.

Each snippet is generated from the package itself (model file name, input and output names,
input shape, preprocessing), so it is correct for *this* package, not a template to edit. The
ONNX Runtime version named is the one that converted the model: an ``.ort`` file loads in that
version or a newer one.
"""

from __future__ import annotations

from typing import Any

PLATFORMS = ("android", "ios", "linux-arm64")


def _pre_lines(pre: dict[str, Any]) -> str:
    return "\n".join(f"{i}. {step}" for i, step in enumerate(pre["steps"], 1))


def _dims(inp: dict) -> str:
    return "×".join(str(d) for d in inp["shape"][1:])


def _android(m: dict[str, Any], model: str, inp: dict, out: dict, ort_version: str) -> str:
    shape = ", ".join(f"{d}L" for d in inp["shape"])
    nnapi = m["usability"].get("NNAPI", {}).get("suitability") in ("YES", "MAYBE")
    return f"""## Android (Kotlin)

Copy `{model}`{" and `labels.txt`" if m["labels"] else ""} into `app/src/main/assets/`, then in `app/build.gradle`:

```gradle
dependencies {{
    implementation 'com.microsoft.onnxruntime:onnxruntime-android:{ort_version}'
}}
```

```kotlin
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import java.nio.FloatBuffer

val env = OrtEnvironment.getEnvironment()
val options = OrtSession.SessionOptions(){".apply { addNnapi() }" if nnapi else ""}
val session = env.createSession(context.assets.open("{model}").readBytes(), options)

// pixels: {_dims(inp)} floats, preprocessed as in "Preprocessing" above, in {m["preprocess"]["layout"]} order
fun classify(pixels: FloatArray): FloatArray {{
    OnnxTensor.createTensor(env, FloatBuffer.wrap(pixels), longArrayOf({shape})).use {{ input ->
        session.run(mapOf("{inp["name"]}" to input)).use {{ result ->
            @Suppress("UNCHECKED_CAST")
            return (result.get("{out["name"]}").get().value as Array<FloatArray>)[0]
        }}
    }}
}}
```
"""


def _ios(m: dict[str, Any], model: str, inp: dict, out: dict, ort_version: str) -> str:
    stem, ext = model.rsplit(".", 1)
    shape = ", ".join(str(d) for d in inp["shape"])
    return f"""## iOS (Swift)

Add `{model}`{" and `labels.txt`" if m["labels"] else ""} to the app target's resources, then in the `Podfile`:

```ruby
pod 'onnxruntime-objc', '~> {ort_version}'
```

```swift
import onnxruntime_objc

let env = try ORTEnv(loggingLevel: ORTLoggingLevel.warning)
let modelPath = Bundle.main.path(forResource: "{stem}", ofType: "{ext}")!
let session = try ORTSession(env: env, modelPath: modelPath, sessionOptions: nil)

// pixels: {_dims(inp)} floats, preprocessed as in "Preprocessing" above, in {m["preprocess"]["layout"]} order
func classify(_ pixels: [Float]) throws -> [Float] {{
    let data = NSMutableData(bytes: pixels, length: pixels.count * MemoryLayout<Float>.stride)
    let input = try ORTValue(tensorData: data, elementType: ORTTensorElementDataType.float,
                             shape: [{shape}])
    let outputs = try session.run(withInputs: ["{inp["name"]}": input], outputNames: ["{out["name"]}"], runOptions: nil)
    let logits = try outputs["{out["name"]}"]!.tensorData() as Data
    return logits.withUnsafeBytes {{ Array($0.bindMemory(to: Float.self)) }}
}}
```
"""


def _linux(m: dict[str, Any], model: str, inp: dict, out: dict, ort_version: str) -> str:
    pre = m["preprocess"]
    convert = ".convert('L').convert('RGB')" if pre["color"] == "gray" else ".convert('RGB')"
    return f"""## Linux arm64 (Python)

```sh
pip install onnxruntime=={ort_version} numpy pillow
```

```python
import json
import numpy as np
import onnxruntime as ort
from PIL import Image

session = ort.InferenceSession("{model}")
pre = json.loads(session.get_modelmeta().custom_metadata_map["edgefit.preprocess"])

def classify(path: str) -> np.ndarray:
    img = Image.open(path){convert}.resize((pre["resolution"], pre["resolution"]), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / pre["input_max"]
    x = (x - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)
    x = x.transpose(2, 0, 1)[None]  # HWC -> {pre["layout"]}, batch of 1
    return session.run(["{out["name"]}"], {{"{inp["name"]}": x}})[0][0]
```

Pillow's bilinear resize is close to, not identical with, the reference resize (half-pixel
centres, anti-aliased when shrinking); `deploy package verify` checks the model with the reference.
"""


SNIPPETS = {"android": _android, "ios": _ios, "linux-arm64": _linux}


def integration_md(manifest: dict[str, Any], platform: str) -> str:
    """The ``INTEGRATION.md`` text for ``platform``, from the manifest's files, names and preprocessing."""
    model = manifest["model"]["file"]
    inp, out = manifest["inputs"][0], manifest["outputs"][0]
    ort_version = manifest["onnxruntime"]["version"]
    labels = manifest["labels"]
    head = f"""# Using this model ({manifest["model"]["family"]}, {manifest["model"]["precision"]}, {platform})

Generated by edgefit {manifest["edgefit_version"]}. Check the package before shipping it:
`deploy package verify <package> [--run RUN_DIR]`.

- Model: `{model}` ({manifest["model"]["format"]}); input `{inp["name"]}` {inp["dtype"]} {inp["shape"]},
  output `{out["name"]}` {out["dtype"]} {out["shape"]}: {manifest["outputs_meaning"]}.
- Labels: {f"`{labels['file']}`, one per line, in output order ({labels['count']} classes)" if labels
           else "none (the run was not trained on a labelled dataset)"}.
- The preprocessing is also in the model's metadata, key `edgefit.preprocess` (JSON).

### Preprocessing

{_pre_lines(manifest["preprocess"])}

mean = {manifest["preprocess"]["mean"]}, std = {manifest["preprocess"]["std"]}.

"""
    return head + SNIPPETS[platform](manifest, model, inp, out, ort_version)


__all__ = ["PLATFORMS", "integration_md"]
