#!/bin/sh
# Fashion-MNIST for the demo: Debian's package where apt is usable; otherwise probekit's loader
# downloads the original IDX files (MD5-checked) into ~/.cache/probekit on first use.
set -e
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's dataset-fashion-mnist"
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null && exit 0
  echo "apt-get could not install dataset-fashion-mnist; the loader will download the files instead"
fi
