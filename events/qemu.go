package events

// DefaultQEMUMemory is the RAM of a qemu guest whose definition sets none.
const DefaultQEMUMemory = 128 << 20

// QEMUMemoryLimit is the memory limit of a qemu guest's groups when the
// operator set no hard_limit: the guest's RAM plus room for QEMU itself
// (its code, device models, TCG translation cache, I/O buffers), the larger
// of 256 MiB and a quarter of the RAM. A limit of exactly the RAM would get
// QEMU OOM-killed as soon as the guest touches all of its memory.
func QEMUMemoryLimit(ram int64) int64 {
	if ram <= 0 {
		ram = DefaultQEMUMemory
	}
	return ram + max(256<<20, ram/4)
}
