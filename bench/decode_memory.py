"""Peak memory of decoding one large upload, per format, in fresh processes (issue 17: a 126 KB PNG of
7745 x 7744 16-bit pixels cost ~0.95 GB of API memory).

    python -m bench.decode_memory                          # this checkout
    git worktree add /tmp/before <commit>
    python -m bench.decode_memory --checkouts /tmp/before,.  # side by side with an older one

Each case is decoded by `server.imaging.decode_image` in a new Python process that imports the service from
the given checkout, reads the file, then decodes it once; the figure is the growth of the process's peak
resident memory (VmHWM) over the decode, in MiB and in bytes per pixel. Writes
bench/results/decode_memory.json.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from .ikl import RESULTS, machine

HEIGHT, WIDTH = 7744, 7745  # the attack's image: 59.97 megapixels, inside the default 60-megapixel limit

_PROBE = """
import json, sys
def hwm():
    # VmHWM belongs to this process's memory map, made new by exec; ru_maxrss would start at the parent's size
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
sys.path.insert(0, sys.argv[1])
from server.imaging import decode_image
data = open(sys.argv[2], "rb").read()
before = hwm()
image = decode_image(data, filename=sys.argv[2])
after = hwm()
print(json.dumps({"grown_kib": after - before, "pixels": image.width * image.height}))
"""


def _lines() -> np.ndarray:
    """(H, W) uint16 of bright rows and dim columns: it compresses to ~140 KB as PNG."""
    array = np.zeros((HEIGHT, WIDTH), np.uint16)
    array[::97, :] = 3000
    array[:, ::89] = 1000
    return array


def _png16(folder: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(_lines()).save(buffer, format="PNG")
    path = folder / "grey16.png"
    path.write_bytes(buffer.getvalue())
    return path


def _dicom(folder: Path) -> Path:
    """A 12-bit MONOCHROME1 CR with a rescale and a window: the float64 path of the DICOM display pipeline."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CR"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = HEIGHT, WIDTH, 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = 1, -1024, 500, 2000
    ds.PixelData = _lines().tobytes()
    path = folder / "cr12.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def measure(checkout: Path, path: Path) -> dict[str, float]:
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, str(checkout.resolve()), str(path)], capture_output=True, text=True, check=True
    )
    result = json.loads(run.stdout)
    return {
        "peak_growth_mib": result["grown_kib"] / 1024,
        "bytes_per_pixel": result["grown_kib"] * 1024 / result["pixels"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkouts", default=".", help="comma-separated checkouts to import the service from")
    p.add_argument("--out", type=Path, default=RESULTS / "decode_memory.json")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kamp-decode-memory-") as tmp:
        cases = {"16-bit grey PNG": _png16(Path(tmp)), "12-bit CR DICOM, rescale + window": _dicom(Path(tmp))}
        for name, path in cases.items():
            for checkout in args.checkouts.split(","):
                row = {"case": name, "file_kib": path.stat().st_size // 1024, "checkout": checkout}
                row.update(measure(Path(checkout), path))
                rows.append(row)
                print(f"{name:36s} {checkout:24s} {row['peak_growth_mib']:7.0f} MiB {row['bytes_per_pixel']:5.1f} B/px")
    args.out.write_text(json.dumps({"machine": machine(), "height": HEIGHT, "width": WIDTH, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
