# The static SASS of the fused GEMV (gemv_tc_kernel<B,128,Bulk>, B = ${BITS:-3}, Bulk = ${BULK:-0}): whole-kernel counts
# (instructions, weight copies, the predicated-off LDS that ptxas puts before an LDGSTS that follows
# other instructions, L2-policy constants re-made per copy, divisions), then the instruction mix of
# the unit loop (between the first and last IMMA). Needs cuobjdump: the GPU machine has it;
# elsewhere the pip wheel nvidia-cuda-cuobjdump carries it (unzip it and put its nvidia/cu13/bin
# on PATH). No GPU needed: instruction counts of a change can be compared here before a GPU call.
B=${BITS:-3}
nvcc -std=c++17 -O3 --expt-relaxed-constexpr -arch=sm_90 -Icpp -Icuda -c cuda/gemv_tc$B.cu -o /tmp/g$B.o || exit 1
cuobjdump -sass -fun "_ZN4ddrt3gpu14gemv_tc_kernelILi${B}ELi128ELb${BULK:-0}EEEvNS0_6TcArgsE" /tmp/g$B.o > /tmp/k$B.sass
ins() { grep -cE "/\*[0-9a-f]+\*/ +(@!?U?P[0-9T] +)?$1" /tmp/k$B.sass; }
echo "instructions $(ins '[A-Z]') LDGSTS $(ins LDGSTS) dummy LDS $(grep -c '@!PT LDS RZ' /tmp/k$B.sass)" \
     "policy re-made $(grep -c 'UMOV UR[0-9]*, 0xf0' /tmp/k$B.sass) MUFU.RCP $(ins MUFU.RCP) IMMA $(ins IMMA)"
f=$(grep -n IMMA /tmp/k$B.sass | head -1 | cut -d: -f1); l=$(grep -n IMMA /tmp/k$B.sass | tail -1 | cut -d: -f1)
echo "unit loop lines $f..$l"
sed -n "${f},${l}p" /tmp/k$B.sass | grep -oE '^\s+/\*[0-9a-f]+\*/\s+(@!?U?P[0-9T] )?[A-Z0-9_]+(\.[A-Z0-9_.]+)?' \
  | awk '{print $NF}' | sed 's/\..*//' | sort | uniq -c | sort -rn | head -25
[ -n "${OUT:-}" ] && cp /tmp/k$B.sass "$OUT/k$B.sass"
