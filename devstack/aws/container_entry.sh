#!/bin/sh
# PID 1 of a model container (devstack/aws/container.py starts it under `unshare --mount --pid`): give
# the serving stack what SageMaker gives the PyTorch inference image, then run the image's own
# serving entry point, the toolkit's serving.main(), which writes /etc/sagemaker-ts.properties and
# starts TorchServe on SAGEMAKER_BIND_TO_PORT.
#
#   container_entry.sh <model dir> <scratch dir> <python>
set -eu
model=$1 scratch=$2 python=$3

# /etc and /opt of this machine, with writes kept in the scratch directory (the container's layer)
for dir in etc opt; do
  mkdir -p "$scratch/$dir/upper" "$scratch/$dir/work"
  mount -t overlay overlay -o "lowerdir=/$dir,upperdir=$scratch/$dir/upper,workdir=$scratch/$dir/work" "/$dir"
done
# the unpacked model.tar.gz, read-only, where SageMaker mounts it
mkdir -p /opt/ml/model
mount --bind "$model" /opt/ml/model
mount -o remount,bind,ro /opt/ml/model
# a /tmp of its own: TorchServe's pid file and its workers' sockets (/tmp/.ts.sock.9000, ...)
mount -t tmpfs tmpfs /tmp
cd /tmp
exec "$python" -c 'from sagemaker_pytorch_serving_container import serving; serving.main()'
