// Finding and reading policy files, hashing them, and running parser and
// validator over them (load_policy / load_policy_text).
#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <tuple>

#include "policy/policy_internal.h"

namespace tlswall::policy {
namespace {

namespace fs = std::filesystem;
using internal::Diagnostics;
using internal::SourceFile;

SourceLocation whole(const std::string& file) { return SourceLocation{file, 0, 0}; }

// Reads a whole regular file; on failure returns false with a reason.
bool read_file(const std::string& path, std::string& bytes, std::string& reason) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec) {
    reason = ec.message();
    return false;
  }
  if (!fs::is_regular_file(st)) {
    reason = "not a regular file";
    return false;
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) {
    reason = std::strerror(errno);
    return false;
  }
  bytes.clear();
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f.get())) > 0) bytes.append(buf, n);
  if (std::ferror(f.get())) {
    reason = std::strerror(errno);
    return false;
  }
  return true;
}

// `incomplete`: some file could not be read, so checks that need the whole
// policy (references, overlaps, limits) would only report echoes.
LoadResult finish(const std::vector<SourceFile>& files, std::chrono::system_clock::time_point now,
                  Diagnostics& diags, bool incomplete) {
  internal::ParsedPolicy parsed;
  parsed.incomplete = incomplete;
  for (const SourceFile& f : files) {
    internal::parse_policy_file(f.display_name, f.bytes, parsed, diags);
  }
  Policy policy = internal::validate_policy(std::move(parsed), now, diags);
  if (!diags.has_errors() && !files.empty()) {
    // The last check: the policy must fit the kernel's tables as built (the
    // port table's size depends on how rules and exemptions interleave, so
    // only building it tells). `policy check` then never accepts a policy
    // the daemon cannot publish.
    try {
      build_kernel_tables(compile_policy(policy, now));
    } catch (const std::exception& e) {
      diags.error({files.front().display_name, 1, 1}, e.what());
    }
  }
  for (const SourceFile& f : files) policy.files.push_back(f.path);
  std::sort(policy.files.begin(), policy.files.end());
  policy.hash = internal::policy_hash(files);

  LoadResult result;
  result.diagnostics = std::move(diags.list());
  // Report in reading order: file, then line, then column.
  auto rank = [&](const Diagnostic& d) {
    size_t i = 0;
    while (i < files.size() && files[i].display_name != d.where.file) ++i;
    const size_t file_rank = i < files.size() ? i + 1 : 0;  // file-less ones first
    return std::make_tuple(file_rank, d.where.line, d.where.column);
  };
  std::stable_sort(result.diagnostics.begin(), result.diagnostics.end(),
                   [&](const Diagnostic& a, const Diagnostic& b) { return rank(a) < rank(b); });
  if (!diags.has_errors()) result.policy = std::move(policy);
  return result;
}

}  // namespace

namespace internal {

std::string policy_hash(const std::vector<SourceFile>& files) {
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  bool ok = ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1;
  for (const SourceFile& f : files) {
    const std::string len = std::to_string(f.bytes.size());
    ok = ok && EVP_DigestUpdate(ctx.get(), f.base_name.data(), f.base_name.size()) == 1 &&
         EVP_DigestUpdate(ctx.get(), "\0", 1) == 1 &&
         EVP_DigestUpdate(ctx.get(), len.data(), len.size()) == 1 &&
         EVP_DigestUpdate(ctx.get(), "\0", 1) == 1 &&
         EVP_DigestUpdate(ctx.get(), f.bytes.data(), f.bytes.size()) == 1;
  }
  ok = ok && EVP_DigestFinal_ex(ctx.get(), md, &md_len) == 1;
  if (!ok) throw std::runtime_error("sha256 of the policy failed (OpenSSL EVP)");
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < md_len; ++i) {
    hex += kHex[md[i] >> 4];
    hex += kHex[md[i] & 15];
  }
  return hex;
}

}  // namespace internal

LoadResult load_policy(const std::string& path, std::chrono::system_clock::time_point now) {
  Diagnostics diags;
  LoadResult failed;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    diags.error(whole(path), "cannot read policy: " +
                                 (ec ? ec.message() : std::string("no such file or directory")));
    failed.diagnostics = std::move(diags.list());
    return failed;
  }

  std::vector<std::string> names;  // display names, sorted by base name
  if (fs::is_directory(st)) {
    std::vector<std::string> bases;
    for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string base = it->path().filename().string();
      // Hidden files (editor and package-manager leftovers) are not policy.
      if (base.size() > 5 && base[0] != '.' && base.compare(base.size() - 5, 5, ".toml") == 0) {
        bases.push_back(base);
      }
    }
    if (ec) {
      diags.error(whole(path), "cannot list policy directory: " + ec.message());
      failed.diagnostics = std::move(diags.list());
      return failed;
    }
    if (bases.empty()) {
      diags.error(whole(path), "policy directory has no *.toml files");
      failed.diagnostics = std::move(diags.list());
      return failed;
    }
    std::sort(bases.begin(), bases.end());
    for (const auto& b : bases) names.push_back((fs::path(path) / b).string());
  } else {
    names.push_back(path);
  }

  std::vector<SourceFile> files;
  for (const std::string& name : names) {
    SourceFile f;
    f.display_name = name;
    f.path = fs::absolute(name, ec).lexically_normal().string();
    if (ec) f.path = name;
    f.base_name = fs::path(name).filename().string();
    std::string reason;
    if (!read_file(name, f.bytes, reason)) {
      diags.error(whole(name), "cannot read policy file: " + reason);
      continue;
    }
    files.push_back(std::move(f));
  }
  return finish(files, now, diags, diags.has_errors());
}

LoadResult load_policy_text(const std::string& name, const std::string& text,
                            std::chrono::system_clock::time_point now) {
  Diagnostics diags;
  SourceFile f;
  f.display_name = name;
  f.path = name;
  f.base_name = fs::path(name).filename().string();
  f.bytes = text;
  return finish({f}, now, diags, false);
}

}  // namespace tlswall::policy
