"""Writes the JPEG copies of tests/data/fmnist_test_2_trouser.png that tests/cli_deploy.sh decodes:
a baseline and a progressive one (progressive JPEGs define Huffman tables between scans, which kiln's
check of the tables walks past), both at quality 95.

Usage: /usr/bin/python3 make_jpeg_fixtures.py   (from tests/ref; needs python3-pil, only to remake them)
"""
import os

from PIL import Image

data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
image = Image.open(os.path.join(data, "fmnist_test_2_trouser.png")).convert("L")
image.save(os.path.join(data, "fmnist_test_2_trouser.jpg"), quality=95)
image.save(os.path.join(data, "fmnist_test_2_trouser_progressive.jpg"), quality=95, progressive=True)
