package gmem

// chunkTable is the page cache's index of chunks (index>>9), the model's
// xarray: a directory of 512-entry blocks, one block per GiB of file
// touched (4 KiB), so the fault path finds a chunk with two array loads
// and no map hashing. Kernel: the xarray under mapping->i_pages.
type chunkTable struct {
	dirs []*[512]*chunk
	n    int     // chunks present
	slab []chunk // the rest of the last block of chunks allocated
}

// slabChunks is how many chunks are allocated at once: a 2M fault then
// costs no Go allocation of its own (one per 128 MiB of folios).
const slabChunks = 64

// alloc returns a new chunk holding c, carved from a block of
// slabChunks. A deleted chunk is not reused (a caller may still hold it);
// its block is freed once none of its chunks is referenced.
func (t *chunkTable) alloc(c chunk) *chunk {
	if len(t.slab) == 0 {
		t.slab = make([]chunk, slabChunks)
	}
	p := &t.slab[0]
	*p = c
	t.slab = t.slab[1:]
	return p
}

// get returns the chunk at key k, or nil.
func (t *chunkTable) get(k uint64) *chunk {
	if d := k >> 9; d < uint64(len(t.dirs)) && t.dirs[d] != nil {
		return t.dirs[d][k&511]
	}
	return nil
}

// set stores c (not nil) at key k.
func (t *chunkTable) set(k uint64, c *chunk) {
	d := k >> 9
	if d >= uint64(len(t.dirs)) {
		t.dirs = append(t.dirs, make([]*[512]*chunk, d+1-uint64(len(t.dirs)))...)
	}
	if t.dirs[d] == nil {
		t.dirs[d] = new([512]*chunk)
	}
	if t.dirs[d][k&511] == nil {
		t.n++
	}
	t.dirs[d][k&511] = c
}

// del removes the chunk at key k, and its block once empty.
func (t *chunkTable) del(k uint64) {
	d := k >> 9
	if d >= uint64(len(t.dirs)) || t.dirs[d] == nil || t.dirs[d][k&511] == nil {
		return
	}
	t.dirs[d][k&511] = nil
	t.n--
	if *t.dirs[d] == ([512]*chunk{}) {
		t.dirs[d] = nil
	}
}

// keys returns the keys of present chunks in [lo, hi], sorted.
func (t *chunkTable) keys(lo, hi uint64) []uint64 {
	var keys []uint64
	for d := lo >> 9; d <= hi>>9 && d < uint64(len(t.dirs)); d++ {
		blk := t.dirs[d]
		if blk == nil {
			continue
		}
		for i := max(lo, d<<9) - d<<9; i < 512 && d<<9+i <= hi; i++ {
			if blk[i] != nil {
				keys = append(keys, d<<9+i)
			}
		}
	}
	return keys
}
