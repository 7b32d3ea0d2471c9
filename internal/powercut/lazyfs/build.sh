#!/bin/sh
# build.sh DEST: builds LazyFS from lazyfs-src.tar.gz beside this script into
# DEST (which it empties first) and prints the path of the lazyfs binary.
#
# Needs Debian's cmake g++ libfuse3-dev fuse3 libtoml11-dev libspdlog-dev. The
# upstream build downloads toml11 and spdlog at build time; this one uses
# Debian's instead, so it works offline. The binary finds libpcache.so through
# an absolute RUNPATH into DEST: build it where it will stay.
#
# The Go package internal/powercut runs this once per tarball and caches the
# result; by hand:
#
#   sh build.sh /tmp/lazyfs    # prints /tmp/lazyfs/lazyfs/lazyfs/build/lazyfs
#
# LazyFS keeps every write in its own cache until the application fsyncs it.
# Mount:   BIN MOUNTDIR --config-path CONF.toml -o modules=subdir -o subdir=ROOTDIR
#          (CONF.toml: see lazyfs/README.md in the tarball; allow_other is only
#          needed when other users than the one mounting must see the files)
# Cut the power: echo "lazyfs::clear-cache" > FIFO   (drops every unsynced write)
# Unmount: fusermount3 -u MOUNTDIR
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:?usage: build.sh DEST}
rm -rf "$dest"
mkdir -p "$dest"
tar xzf "$here/lazyfs-src.tar.gz" -C "$dest"
cd "$dest/lazyfs"

# Debian's toml11 and spdlog instead of FetchContent downloads; no unit tests
# (they download googletest).
p=libs/libpcache/CMakeLists.txt
sed -i -e '/^include(FetchContent)/,/^set_target_properties(spdlog PROPERTIES POSITION_INDEPENDENT_CODE ON)/c\
find_package(toml11 REQUIRED)\
find_package(spdlog REQUIRED)' \
	-e 's|target_link_libraries(pcache toml11::toml11 spdlog)|target_link_libraries(pcache toml11::toml11 spdlog::spdlog)|' "$p"
p=lazyfs/CMakeLists.txt
sed -i -e 's|link_directories(../libs/libpcache/build/_deps/spdlog-build/)|find_package(spdlog REQUIRED)\nfind_package(toml11 REQUIRED)|' \
	-e '\|include_directories(../libs/libpcache/build/_deps/spdlog-src/include)|d' \
	-e 's|option(LAZYFS_BUILD_TESTS "Build LazyFS unit tests" ON)|option(LAZYFS_BUILD_TESTS "Build LazyFS unit tests" OFF)|' \
	-e 's|target_link_libraries(${CMAKE_PROJECT_NAME} fuse3 Threads::Threads libpcache.so)|target_link_libraries(${CMAKE_PROJECT_NAME} fuse3 Threads::Threads libpcache.so spdlog::spdlog toml11::toml11)|' "$p"
for want in 'find_package(toml11 REQUIRED)' 'spdlog::spdlog toml11::toml11'; do
	grep -qF "$want" libs/libpcache/CMakeLists.txt lazyfs/CMakeLists.txt || { echo "build.sh: patching the CMake files failed ($want)" >&2; exit 1; }
done

jobs=$(nproc 2>/dev/null || echo 2)
log=$dest/build.log
# libpcache first: lazyfs links it from libs/libpcache/build.
for dir in libs/libpcache lazyfs; do
	{ cmake -S "$dir" -B "$dir/build" -DLAZYFS_BUILD_TESTS=OFF && cmake --build "$dir/build" -j "$jobs"; } >>"$log" 2>&1 ||
		{ tail -30 "$log" >&2; echo "build.sh: building $dir failed; full log in $log" >&2; exit 1; }
done
echo "$dest/lazyfs/lazyfs/build/lazyfs"
