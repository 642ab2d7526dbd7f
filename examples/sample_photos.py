"""Write a folder of sample photographs, to follow docs/tutorial.md without
photos of your own (the same as ``streamae photos FOLDER``).

The photographs are the natural scenes bundled inside the scikit-image
wheel (nothing is downloaded), saved as JPEG files like a camera would:

    python examples/sample_photos.py photos/
"""

import argparse

from streamae._demo import sample_photos


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="folder to create (or add to)")
    args = parser.parse_args()
    sample_photos(args.folder, overwrite=True)


if __name__ == "__main__":
    main()
