# The instruction mix of the fused GEMV's unit loop (between the first and last HMMA of
# gemv_tc_kernel<3,128>), from the SASS. Needs cuobjdump and nvdisasm: the GPU machine has them;
# elsewhere the pip wheels nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm carry both (unzip them
# and put their nvidia/cu13/bin on PATH).
nvcc -std=c++17 -O3 -arch=sm_90 -Icpp -Icuda -c cuda/gemv_tc3.cu -o /tmp/g3.o || exit 1
cuobjdump -sass -fun '_ZN4ddrt3gpu14gemv_tc_kernelILi3ELi128EEEvNS0_6TcArgsE' /tmp/g3.o > /tmp/k3.sass
echo "lines $(wc -l < /tmp/k3.sass), HMMA $(grep -c HMMA /tmp/k3.sass)"
f=$(grep -n HMMA /tmp/k3.sass | head -1 | cut -d: -f1); l=$(grep -n HMMA /tmp/k3.sass | tail -1 | cut -d: -f1)
echo "loop region lines $f..$l"
sed -n "${f},${l}p" /tmp/k3.sass | grep -oE '^\s+/\*[0-9a-f]+\*/\s+(@!?U?P[0-9T] )?[A-Z0-9_]+(\.[A-Z0-9_.]+)?' \
  | awk '{print $NF}' | sed 's/\..*//' | sort | uniq -c | sort -rn | head -25
cp /tmp/k3.sass ${OUT:-/tmp}/k3.sass
