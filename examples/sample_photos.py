"""Write a folder of sample photographs, to follow docs/tutorial.md without
photos of your own.

The photographs are the natural scenes bundled inside the scikit-image
wheel (nothing is downloaded), saved as JPEG files like a camera would:

    python examples/sample_photos.py photos/
"""

import argparse
import os

import numpy as np
from PIL import Image

# Photographs shipped in skimage/data (no download): people, animals,
# objects, textures. Text, logos, masks, microscopy and astronomy are left out.
NAMES = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
         "motorcycle_left", "rocket")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="folder to create (or add to)")
    args = parser.parse_args()

    import skimage.data
    import skimage.io

    os.makedirs(args.folder, exist_ok=True)
    data_dir = os.path.dirname(skimage.data.__file__)
    for name in NAMES:
        source = next(f for f in os.listdir(data_dir) if f.split(".")[0] == name)
        pixels = np.asarray(skimage.io.imread(os.path.join(data_dir, source)))
        if pixels.ndim == 3:
            pixels = pixels[..., :3]  # drop an alpha channel
        path = os.path.join(args.folder, f"{name}.jpg")
        Image.fromarray(pixels.astype(np.uint8)).save(path, quality=92)
        print(f"{path}: {pixels.shape[1]}x{pixels.shape[0]}")


if __name__ == "__main__":
    main()
