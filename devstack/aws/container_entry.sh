#!/bin/sh
# PID 1 of a model container (devstack/aws/container.py starts it under `unshare --mount --pid`): give
# the serving stack what SageMaker gives the PyTorch inference image, then run the image's own
# serving entry point, the toolkit's serving.main(), which writes /etc/sagemaker-ts.properties and
# starts TorchServe on SAGEMAKER_BIND_TO_PORT.
#
#   container_entry.sh <model dir> <scratch dir> <python> [<path to keep> <its real path>] ...
#
# The paths to keep (the serving environment's folder, as the container names it and as it resolves on
# this machine) stay visible where they are, also when either lies under this machine's /tmp, which the
# container's own /tmp would otherwise hide (a checkout in /tmp, or a link to one).
set -eu
model=$1 scratch=$2 python=$3
shift 3

# /etc and /opt of this machine, with writes kept in the scratch directory (the container's layer)
for dir in etc opt; do
  mkdir -p "$scratch/$dir/upper" "$scratch/$dir/work"
  mount -t overlay overlay -o "lowerdir=/$dir,upperdir=$scratch/$dir/upper,workdir=$scratch/$dir/work" "/$dir"
done
# the unpacked model.tar.gz, read-only, where SageMaker mounts it
mkdir -p /opt/ml/model
mount --bind "$model" /opt/ml/model
mount -o remount,bind,ro /opt/ml/model
# a /tmp of its own: TorchServe's pid file and its workers' sockets (/tmp/.ts.sock.9000, ...), with the
# kept paths under the host's /tmp bound back in from a view of it taken first
host_tmp=/opt/.host-tmp
mkdir -p "$host_tmp"
mount --rbind /tmp "$host_tmp"
mount -t tmpfs tmpfs /tmp
bind() { mkdir -p "$2" && mount --rbind "$1" "$2"; }
while [ $# -ge 2 ]; do
  keep=$1 real=$2
  shift 2
  case $real in /tmp/*) source=$host_tmp/${real#/tmp/} && bind "$source" "$real" ;; *) source=$real ;; esac
  case $keep in /tmp/*) [ "$keep" = "$real" ] || bind "$source" "$keep" ;; esac
done
umount -l "$host_tmp"
cd /tmp
exec "$python" -c 'from sagemaker_pytorch_serving_container import serving; serving.main()'
