"""Out-of-order stores: the bytes a receiver holds beyond its commit point, and how each target
resolves a new copy of bytes it already holds (see :mod:`.policy`).

Three shapes, one interface. Offsets are stream offsets; pieces are kept sorted by start in two
parallel lists (``starts``, ``data``) so lookups are a bisect and draining the front is one
slice deletion, never a ``pop(0)`` per piece.

- :class:`RunStore` (``first``, ``last``): disjoint runs. A new copy fills only what is not held
  (``first``) or overwrites what is (``last``). A piece that continues the run before it is
  appended to that run, so an in-order trickle of tiny segments costs one piece, not one each.
- :class:`TrimStore` (``bsd``, ``windows``): disjoint segments that keep their own (trimmed)
  boundaries, because the policy judges by where each queued segment starts: a queued segment
  starting at or before the new one keeps its bytes, one starting after it is overwritten
  (Snort 3 ``tcp_overlap_resolver``: left overlap keeps the first, a right overlap truncates the
  existing segment unless both start together). Never coalesced: that would move boundaries.
- :class:`LinuxStore` (``linux``): whole segments that may overlap, as ``tcp_data_queue_ofo``
  keeps them: a copy contained in the segment before it is dropped, one starting at the same
  sequence number and ending later replaces it, one that starts right where the segment before
  it ends is coalesced into it, and the segments a new one wholly covers are removed. Draining
  in start order skips what was already delivered (``tcp_ofo_queue``), so where segments still
  overlap the one starting first wins.

Work per insertion is a bisect, the bytes compared and copied, and a list insertion (pointer
moves over at most ``max_pieces`` entries, which the stream caps).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import NamedTuple

from .policy import OverlapPolicy


class Inserted(NamedTuple):
    overlapped: int  # bytes of the new copy that were held already
    conflicts: int  # held pieces whose bytes differed from the new copy's


class _Store:
    __slots__ = ("starts", "data", "held")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.data: list[bytearray] = []
        self.held = 0  # bytes in all pieces (overlapping Linux segments count in full)

    @property
    def pieces(self) -> int:
        return len(self.starts)

    def first_start(self) -> int | None:
        return self.starts[0] if self.starts else None

    def insert(self, s: int, data: bytes) -> Inserted:  # pragma: no cover - abstract
        raise NotImplementedError

    def take(self, nxt: int, limit: int | None = None) -> list[bytes]:
        """Remove and return the bytes that continue the stream at ``nxt``, in order, up to
        ``limit`` (None: as far as they reach). Pieces wholly before ``nxt`` are dropped."""
        starts, data = self.starts, self.data
        out: list[bytes] = []
        k = 0
        n = len(starts)
        cur = nxt
        while k < n and starts[k] <= cur:
            a = starts[k]
            d = data[k]
            b = a + len(d)
            if b > cur:
                if limit is not None and b > limit:
                    if limit > cur:
                        out.append(bytes(d[cur - a : limit - a]))
                        cur = limit
                    # keep the rest as a piece starting at ``cur``
                    self.held -= cur - a
                    del d[: cur - a]
                    starts[k] = cur
                    break
                out.append(bytes(d[cur - a :]) if cur > a else bytes(d))
                cur = b
            self.held -= len(d)
            k += 1
        if k:
            del starts[:k]
            del data[:k]
        return out

    def discard_before(self, off: int) -> None:
        """Forget every byte before ``off`` (a gap was declared over them)."""
        starts, data = self.starts, self.data
        k = 0
        while k < len(starts) and starts[k] < off:
            a, d = starts[k], data[k]
            if a + len(d) > off:
                self.held -= off - a
                del d[: off - a]
                starts[k] = off
                break
            self.held -= len(d)
            k += 1
        if k:
            del starts[:k]
            del data[:k]

    def clear(self) -> None:
        self.starts.clear()
        self.data.clear()
        self.held = 0

    def remove_range(self, s: int, e: int) -> None:
        """Forget the bytes in [s, e) (pieces straddling an edge keep their other part)."""
        starts, data = self.starts, self.data
        k = max(0, bisect_right(starts, s) - 1)
        while k < len(starts) and starts[k] < e:
            a = starts[k]
            d = data[k]
            b = a + len(d)
            if b <= s:
                k += 1
                continue
            lo, hi = max(a, s), min(b, e)
            self.held -= hi - lo
            head, tail = d[: lo - a], d[hi - a :]
            if head and tail:
                data[k] = head
                starts.insert(k + 1, hi)
                data.insert(k + 1, tail)
                return
            if head:
                data[k] = head
                k += 1
            elif tail:
                starts[k] = hi
                data[k] = tail
                return
            else:
                del starts[k]
                del data[k]

    def uncovered(self, s: int, e: int) -> list[tuple[int, int]]:
        """The ranges of ``[s, e)`` no piece holds."""
        out: list[tuple[int, int]] = []
        starts, data = self.starts, self.data
        k = max(0, bisect_right(starts, s) - 1)
        cur = s
        while k < len(starts) and starts[k] < e:
            a = starts[k]
            b = a + len(data[k])
            if a > cur:
                out.append((cur, a))
            cur = max(cur, b)
            k += 1
        if cur < e:
            out.append((cur, e))
        return out

    def covered(self, s: int, e: int) -> int:
        """How many bytes of [s, e) are held."""
        return (e - s) - sum(hi - lo for lo, hi in self.uncovered(s, e))

    def _compare(self, s: int, new: bytes, lo: int, hi: int, k: int) -> bool:
        """Whether piece k's bytes on [lo, hi) differ from the new copy's."""
        a = self.starts[k]
        return new[lo - s : hi - s] != self.data[k][lo - a : hi - a]


class RunStore(_Store):
    """Disjoint runs; ``keep_old`` is ``first``, else ``last`` (see the module doc)."""

    __slots__ = ("keep_old",)

    def __init__(self, keep_old: bool) -> None:
        super().__init__()
        self.keep_old = keep_old

    def insert(self, s: int, new: bytes) -> Inserted:
        starts, data = self.starts, self.data
        e = s + len(new)
        k = bisect_right(starts, s) - 1
        if k < 0 or starts[k] + len(data[k]) <= s:
            k += 1  # the first piece that could overlap
        overlapped = conflicts = 0
        fills: list[tuple[int, int]] = []  # parts of the new copy no piece holds
        cur = s
        while k < len(starts) and starts[k] < e:
            a = starts[k]
            d = data[k]
            b = a + len(d)
            if a > cur:
                fills.append((cur, a))
            lo, hi = max(a, s), min(b, e)
            overlapped += hi - lo
            if self._compare(s, new, lo, hi, k):
                conflicts += 1
                if not self.keep_old:
                    d[lo - a : hi - a] = new[lo - s : hi - s]
            cur = b
            k += 1
        if cur < e:
            fills.append((cur, e))
        for lo, hi in fills:
            self._add(lo, new[lo - s : hi - s])
        return Inserted(overlapped, conflicts)

    def _add(self, s: int, piece: bytes) -> None:
        """Add bytes no piece holds: appended to the run that ends where they start, else a new
        piece (never merged into the run after it: prepending copies the whole run)."""
        starts, data = self.starts, self.data
        k = bisect_left(starts, s)
        self.held += len(piece)
        if k and starts[k - 1] + len(data[k - 1]) == s:
            data[k - 1] += piece
            return
        starts.insert(k, s)
        data.insert(k, bytearray(piece))


class TrimStore(_Store):
    """``bsd`` / ``windows``: disjoint segments with their own boundaries (see the module doc)."""

    __slots__ = ()

    def insert(self, s: int, new: bytes) -> Inserted:
        starts, data = self.starts, self.data
        e = s + len(new)
        src = s  # offset of new[0]
        overlapped = conflicts = 0
        # Left overlap: a queued segment starting before the new one keeps its bytes.
        k = bisect_left(starts, s) - 1
        if k >= 0:
            a = starts[k]
            b = a + len(data[k])
            if b > s:
                hi = min(b, e)
                overlapped += hi - s
                conflicts += self._compare(src, new, s, hi, k)
                if b >= e:
                    return Inserted(overlapped, conflicts)
                s = b
        # Right overlaps: the new segment wins over those starting after it; one starting
        # together with it keeps its bytes, and the new one goes on after it.
        k = bisect_left(starts, s)
        while k < len(starts) and starts[k] < e:
            a = starts[k]
            d = data[k]
            b = a + len(d)
            hi = min(b, e)
            overlapped += hi - a
            conflicts += self._compare(src, new, a, hi, k)
            if a == s:
                if b >= e:
                    return Inserted(overlapped, conflicts)
                s = b
                k += 1
                continue
            if b <= e:  # wholly covered: the old segment goes
                self.held -= len(d)
                del starts[k]
                del data[k]
                continue
            self.held -= e - a  # partly covered: its front is cut
            del d[: e - a]
            starts[k] = e
            break
        k = bisect_left(starts, s)
        starts.insert(k, s)
        data.insert(k, bytearray(new[s - src :]))
        self.held += e - s
        return Inserted(overlapped, conflicts)


LINUX_COALESCE = 256
"""A queued segment takes a contiguous one into itself only while both fit this many bytes:
Linux copies the new segment into the queued buffer's tailroom (``skb_try_coalesce``), which
small segments fit and MTU-sized ones do not (observed on Linux 6.18: 12-byte segments always
merged, 1000-byte ones never). The true limit depends on how the driver built the buffers."""


class _Node:
    __slots__ = ("start", "data", "left", "right", "parent", "red")

    def __init__(self, start: int, data: bytearray) -> None:
        self.start = start
        self.data = data
        self.left: _Node | None = None
        self.right: _Node | None = None
        self.parent: _Node | None = None
        self.red = True

    @property
    def end(self) -> int:
        return self.start + len(self.data)


class LinuxStore:
    """``linux``: the out-of-order queue as ``tcp_data_queue_ofo`` keeps it: whole segments,
    possibly overlapping, in a red-black tree ordered by start. Which queued segment a new one
    is judged against depends on the tree's shape (the walk only meets the nodes on its path),
    so the tree is the kernel's own algorithm (``lib/rbtree.c``: insert, replace, erase), and
    so is the order of checks: coalescing onto the last segment, the walk, and removing the
    segments the new one covers."""

    __slots__ = ("root", "last", "held", "pieces")

    def __init__(self) -> None:
        self.root: _Node | None = None
        self.last: _Node | None = None  # tp->ooo_last_skb: the highest-starting segment
        self.held = 0
        self.pieces = 0

    # -- the queue's interface -------------------------------------------------------------

    def first_start(self) -> int | None:
        node = self._first()
        return None if node is None else node.start

    def insert(self, s: int, new: bytes) -> Inserted:
        e = s + len(new)
        overlapped, conflicts = self._effective_overlap(s, new)
        result = Inserted(overlapped, conflicts)
        last = self.last
        if self.root is None:
            self._link(_Node(s, bytearray(new)), None, False)
            return result
        assert last is not None
        if self._coalesce(last, s, new):  # the common case: appending to the end
            return result
        if s >= last.end:
            self._link(_Node(s, bytearray(new)), last, False)
            return result
        p: _Node | None = self.root
        parent = p
        go_left = False
        while p is not None:
            parent = p
            if s < p.start:
                p, go_left = p.left, True
                continue
            if s < p.end:
                if e <= p.end:
                    return result  # every byte present: the new copy is dropped
                if s == p.start:  # same start, ends later: it replaces the queued one
                    node = _Node(s, bytearray(new))
                    self._replace(p, node)
                    self.held += len(new) - len(p.data)
                    self._merge_right(node, e)
                    return result
            elif self._coalesce(p, s, new):
                return result
            p, go_left = p.right, False
        node = _Node(s, bytearray(new))
        self._link(node, parent, go_left)
        self._merge_right(node, e)
        return result

    def take(self, nxt: int, limit: int | None = None) -> list[bytes]:
        """tcp_ofo_queue: segments leave in start order while they start at or before the
        commit point; each is read from the commit point on (bytes already read win)."""
        out: list[bytes] = []
        cur = nxt
        node = self._first()
        while node is not None and node.start <= cur:
            self._erase(node)
            if node.end > cur:
                out.append(bytes(node.data[cur - node.start :]))
                cur = node.end
            node = self._first()
        return out

    def discard_before(self, off: int) -> None:
        node = self._first()
        while node is not None and node.start < off:
            if node.end > off:
                self.held -= off - node.start
                del node.data[: off - node.start]
                node.start = off
                node = self._next(node)
                continue
            nxt = self._next(node)
            self._erase(node)
            node = nxt

    def clear(self) -> None:
        self.root = self.last = None
        self.held = self.pieces = 0

    def covered(self, s: int, e: int) -> int:
        return (e - s) - sum(hi - lo for lo, hi in self.uncovered(s, e))

    def uncovered(self, s: int, e: int) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        cur = s
        node = self._from(s)
        while node is not None and node.start < e:
            if node.end > cur:
                if node.start > cur:
                    out.append((cur, node.start))
                cur = node.end
            node = self._next(node)
        if cur < e:
            out.append((cur, e))
        return out

    # -- helpers ---------------------------------------------------------------------------

    def _coalesce(self, to: _Node, s: int, new: bytes) -> bool:
        if to.end != s or len(to.data) + len(new) > LINUX_COALESCE:
            return False
        to.data += new
        self.held += len(new)
        return True

    def _merge_right(self, node: _Node, e: int) -> None:
        """Remove the segments after ``node`` that it covers; the first that reaches past
        ``e`` stays. With none after it, it is the last segment."""
        nxt = self._next(node)
        while nxt is not None and nxt.start < e:
            if nxt.end > e:
                break
            after = self._next(nxt)
            self._erase(nxt)
            nxt = after
        if nxt is None:
            self.last = node

    def _from(self, s: int) -> _Node | None:
        """The first node that may reach past ``s``: from the last one starting at or before
        it, stepping back over earlier ones that still reach past it (a tree search, then
        as many steps as segments overlap there)."""
        node, floor = self.root, None
        while node is not None:
            if node.start <= s:
                floor, node = node, node.right
            else:
                node = node.left
        if floor is None:
            return self._first()
        while True:
            prev = self._prev(floor)
            if prev is None or prev.end <= s:
                return floor
            floor = prev

    @staticmethod
    def _prev(node: _Node) -> _Node | None:
        if node.left is not None:
            node = node.left
            while node.right is not None:
                node = node.right
            return node
        parent = node.parent
        while parent is not None and node is parent.left:
            node, parent = parent, parent.parent
        return parent

    def _effective_overlap(self, s: int, new: bytes) -> tuple[int, int]:
        """Bytes of [s, e) already queued, judged against what draining would deliver
        (where segments overlap, the one starting first), and how many segments differ."""
        e = s + len(new)
        overlapped = conflicts = 0
        cur = s
        node = self._from(s)
        while node is not None and node.start < e:
            lo, hi = max(node.start, cur), min(node.end, e)
            if hi > lo:
                overlapped += hi - lo
                a = node.start
                if new[lo - s : hi - s] != node.data[lo - a : hi - a]:
                    conflicts += 1
                cur = hi
            node = self._next(node)
        return overlapped, conflicts

    def _first(self) -> _Node | None:
        node = self.root
        if node is None:
            return None
        while node.left is not None:
            node = node.left
        return node

    @staticmethod
    def _next(node: _Node) -> _Node | None:
        if node.right is not None:
            node = node.right
            while node.left is not None:
                node = node.left
            return node
        parent = node.parent
        while parent is not None and node is parent.right:
            node, parent = parent, parent.parent
        return parent

    # -- the red-black tree (lib/rbtree.c: __rb_insert, rb_replace_node, rb_erase) ----------

    def _link(self, node: _Node, parent: _Node | None, left: bool) -> None:
        node.parent = parent
        if parent is None:
            self.root = node
        elif left:
            parent.left = node
        else:
            parent.right = node
        self.held += len(node.data)
        self.pieces += 1
        if self.last is None or node.start >= self.last.start:
            self.last = node
        self._insert_fixup(node)

    def _rotate_left(self, x: _Node) -> None:
        y = x.right
        assert y is not None
        x.right = y.left
        if y.left is not None:
            y.left.parent = x
        self._transplant(x, y)
        y.left = x
        x.parent = y

    def _rotate_right(self, x: _Node) -> None:
        y = x.left
        assert y is not None
        x.left = y.right
        if y.right is not None:
            y.right.parent = x
        self._transplant(x, y)
        y.right = x
        x.parent = y

    def _transplant(self, old: _Node, new: _Node | None) -> None:
        """Put ``new`` where ``old`` hangs (its parent's link), ``old``'s parent its own."""
        parent = old.parent
        if parent is None:
            self.root = new
        elif parent.left is old:
            parent.left = new
        else:
            parent.right = new
        if new is not None:
            new.parent = parent

    def _insert_fixup(self, node: _Node) -> None:
        while True:
            parent = node.parent
            if parent is None:
                node.red = False
                return
            if not parent.red:
                return
            gparent = parent.parent
            assert gparent is not None
            if parent is gparent.left:
                uncle = gparent.right
                if uncle is not None and uncle.red:  # case 1: colour flip
                    uncle.red = parent.red = False
                    gparent.red = True
                    node = gparent
                    continue
                if node is parent.right:  # case 2: left rotate at parent
                    self._rotate_left(parent)
                    node, parent = parent, node
                self._rotate_right(gparent)  # case 3
                parent.red = False
                gparent.red = True
                return
            uncle = gparent.left
            if uncle is not None and uncle.red:
                uncle.red = parent.red = False
                gparent.red = True
                node = gparent
                continue
            if node is parent.left:
                self._rotate_right(parent)
                node, parent = parent, node
            self._rotate_left(gparent)
            parent.red = False
            gparent.red = True
            return

    def _replace(self, victim: _Node, new: _Node) -> None:
        """rb_replace_node: ``new`` takes ``victim``'s place and colour, no rebalancing."""
        self._transplant(victim, new)
        new.left, new.right, new.red = victim.left, victim.right, victim.red
        if new.left is not None:
            new.left.parent = new
        if new.right is not None:
            new.right.parent = new
        if self.last is victim:
            self.last = new

    def _erase(self, node: _Node) -> None:
        self.held -= len(node.data)
        self.pieces -= 1
        if self.last is node:
            self.last = None  # set again below if anything is left
        # ____rb_erase_augmented: the successor replaces a node with two children.
        if node.left is None or node.right is None:
            child = node.left if node.right is None else node.right
            parent = node.parent
            self._transplant(node, child)
            if child is not None:
                child.red = False  # a lone child is red; it takes the node's black
                rebalance = None
            else:
                rebalance = parent if not node.red else None
        else:
            successor = node.right
            while successor.left is not None:
                successor = successor.left
            child2 = successor.right
            if successor is node.right:
                parent = successor
            else:
                parent = successor.parent
                assert parent is not None
                parent.left = child2
                if child2 is not None:
                    child2.parent = parent
                successor.right = node.right
                node.right.parent = successor
            successor.left = node.left
            node.left.parent = successor
            self._transplant(node, successor)
            if child2 is not None:
                child2.red = False
                rebalance = None
            else:
                rebalance = parent if not successor.red else None
            successor.red = node.red
        if rebalance is not None:
            self._erase_fixup(rebalance)
        if self.last is None and self.root is not None:
            last = self.root
            while last.right is not None:
                last = last.right
            self.last = last

    def _erase_fixup(self, parent: _Node) -> None:
        """__rb_erase_color: the paths through ``parent``'s short side lack one black."""
        node: _Node | None = None
        while True:
            sibling = parent.right
            if node is not sibling:  # node is parent's left child
                assert sibling is not None
                if sibling.red:  # case 1: left rotate at parent
                    self._rotate_left(parent)
                    sibling.red = False
                    parent.red = True
                    sibling = parent.right
                    assert sibling is not None
                far, near = sibling.right, sibling.left
                if (far is None or not far.red) and (near is None or not near.red):
                    sibling.red = True  # case 2: colour flip, move up
                    if parent.red:
                        parent.red = False
                        return
                    node, up = parent, parent.parent
                    if up is None:
                        return
                    parent = up
                    continue
                if far is None or not far.red:  # case 3: right rotate at sibling
                    self._rotate_right(sibling)
                    assert near is not None
                    near.red = False
                    sibling.red = True
                    sibling = near
                    far = sibling.right
                self._rotate_left(parent)  # case 4
                sibling.red = parent.red
                parent.red = False
                if far is not None:
                    far.red = False
                return
            sibling = parent.left
            assert sibling is not None
            if sibling.red:
                self._rotate_right(parent)
                sibling.red = False
                parent.red = True
                sibling = parent.left
                assert sibling is not None
            far, near = sibling.left, sibling.right
            if (far is None or not far.red) and (near is None or not near.red):
                sibling.red = True
                if parent.red:
                    parent.red = False
                    return
                node, up = parent, parent.parent
                if up is None:
                    return
                parent = up
                continue
            if far is None or not far.red:
                self._rotate_left(sibling)
                assert near is not None
                near.red = False
                sibling.red = True
                sibling = near
                far = sibling.left
            self._rotate_right(parent)
            sibling.red = parent.red
            parent.red = False
            if far is not None:
                far.red = False
            return


def make_store(policy: OverlapPolicy) -> _Store | LinuxStore:
    if policy is OverlapPolicy.LINUX:
        return LinuxStore()
    if policy is OverlapPolicy.BSD or policy is OverlapPolicy.WINDOWS:
        return TrimStore()
    return RunStore(keep_old=policy is not OverlapPolicy.LAST)
