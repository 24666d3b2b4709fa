// parse_mounts: /proc/mounts text with its octal escapes (fstab(5), proc(5)).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "agent/sys_mounts.h"

namespace tlswall::agent {
namespace {

TEST(ParseMounts, SeveralEntriesInOrder) {
  const auto m = parse_mounts(
      "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n"
      "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n"
      "bpf /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0\n"
      "bpf /run/tlswall/pins bpf rw,relatime 0 0\n");
  ASSERT_EQ(m.size(), 4u);
  EXPECT_EQ(m[0].source, "sysfs");
  EXPECT_EQ(m[0].target, "/sys");
  EXPECT_EQ(m[0].fstype, "sysfs");
  EXPECT_EQ(m[1].target, "/sys/fs/cgroup");
  EXPECT_EQ(m[1].fstype, "cgroup2");
  EXPECT_EQ(m[2].source, "bpf");
  EXPECT_EQ(m[2].target, "/sys/fs/bpf");
  EXPECT_EQ(m[2].fstype, "bpf");
  EXPECT_EQ(m[3].target, "/run/tlswall/pins");
}

TEST(ParseMounts, OctalEscapesAreDecoded) {
  const auto m = parse_mounts(
      "/dev/sdb1 /media/my\\040disk vfat rw 0 0\n"
      "//srv/share\\040one /mnt/tab\\011and\\134slash cifs rw 0 0\n"
      "none /mnt/nl\\012x tmpfs rw 0 0\n");
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0].target, "/media/my disk");
  EXPECT_EQ(m[1].source, "//srv/share one");
  EXPECT_EQ(m[1].target, "/mnt/tab\tand\\slash");
  EXPECT_EQ(m[2].target, "/mnt/nl\nx");
  EXPECT_EQ(m[2].fstype, "tmpfs");
}

TEST(ParseMounts, EscapesAtTheEdgesOfAField) {
  const auto m = parse_mounts("\\040src /trailing\\040 ext4 rw 0 0\nx \\040 ext4 rw 0 0\n");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].source, " src");
  EXPECT_EQ(m[0].target, "/trailing ");
  EXPECT_EQ(m[1].target, " ");
}

TEST(ParseMounts, NonEscapesAreKeptAsWritten) {
  // Not three octal digits: left alone rather than guessed at.
  const auto m = parse_mounts("a /x\\09y ext4 rw 0 0\nb /end\\04 ext4 rw 0 0\n");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].target, "/x\\09y");
  EXPECT_EQ(m[1].target, "/end\\04");
}

TEST(ParseMounts, ShortAndEmptyLinesAreSkipped) {
  const auto m = parse_mounts("\nonly-two fields\nproc /proc proc rw 0 0\n   \n");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].target, "/proc");
  EXPECT_TRUE(parse_mounts("").empty());
}

TEST(ParseMounts, LastLineWithoutNewline) {
  const auto m = parse_mounts("tmpfs /run tmpfs rw 0 0\ntmpfs /tmp tmpfs rw 0 0");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[1].target, "/tmp");
}

}  // namespace
}  // namespace tlswall::agent
