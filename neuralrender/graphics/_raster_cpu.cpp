// Visibility pass of the built-in CPU rasterizer (face id + depth per pixel), no gradients.
//
// Homogeneous 2D rasterization (Olano & Greer 1997): for a triangle with clip-space vertices
// v_i = (x_i, y_i, w_i) and pixel p = (x_ndc, y_ndc, 1), c_i = n_i . p with n_i = v_j x v_k (cyclic) and
// sign-normalised by det = v_0 . (v_1 x v_2). The pixel is covered iff all c_i >= 0 and sum(c) > 0; the
// perspective-correct barycentrics are c / sum(c), the depth w = |det| / sum(c), and
// z_ndc = sum(c_i z_i) / |det|. Faces crossing the camera plane need no clipping: only the part with w > 0
// satisfies the test; z_ndc in [-1, 1] clips against near/far per pixel.
//
// The arithmetic (double precision, fixed operation order, -ffp-contract=off) is mirrored exactly by the
// pure-torch fallback in raster_cpu.py so both give identical face ids.
// Ties in depth keep the smaller face id. Work is split over (batch, band of rows) with std::thread.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <thread>
#include <vector>

namespace {

struct Setup {
  double n[3][3];  // n_i (x, y, 1) coefficients, sign-normalised
  double q[3];     // z_ndc plane
  double absdet;
  int x0, x1, y0, y1;  // inclusive pixel bbox; x0 > x1 means skip
};

inline void cross(const double* a, const double* b, double* o) {
  o[0] = a[1] * b[2] - a[2] * b[1];
  o[1] = a[2] * b[0] - a[0] * b[2];
  o[2] = a[0] * b[1] - a[1] * b[0];
}

void setup_face(const float* vb, const int64_t* f, int H, int W, bool cull, Setup& s) {
  s.x0 = 1;
  s.x1 = 0;
  double v[3][3], z[3];
  for (int k = 0; k < 3; ++k) {
    const float* p = vb + 4 * f[k];
    v[k][0] = p[0];
    v[k][1] = p[1];
    v[k][2] = p[3];
    z[k] = p[2];
  }
  // trivial rejections (all vertices outside the same frustum plane)
  bool all_behind = true, all_l = true, all_r = true, all_t = true, all_b = true, all_n = true, all_f = true;
  bool all_pos = true;
  for (int k = 0; k < 3; ++k) {
    double x = v[k][0], y = v[k][1], w = v[k][2];
    all_behind &= (w <= 0.0);
    all_pos &= (w > 0.0);
    all_l &= (x < -w);
    all_r &= (x > w);
    all_t &= (y < -w);
    all_b &= (y > w);
    all_n &= (z[k] < -w);
    all_f &= (z[k] > w);
  }
  if (all_behind || all_l || all_r || all_t || all_b || all_n || all_f) return;
  double n[3][3];
  cross(v[1], v[2], n[0]);
  cross(v[2], v[0], n[1]);
  cross(v[0], v[1], n[2]);
  double det = (v[0][0] * n[0][0] + v[0][1] * n[0][1]) + v[0][2] * n[0][2];
  if (det == 0.0 || !std::isfinite(det)) return;
  if (cull && det > 0.0) return;
  double sg = det > 0.0 ? 1.0 : -1.0;
  s.absdet = det * sg;
  for (int k = 0; k < 3; ++k)
    for (int c = 0; c < 3; ++c) s.n[k][c] = n[k][c] * sg;
  for (int c = 0; c < 3; ++c) s.q[c] = ((s.n[0][c] * z[0] + s.n[1][c] * z[1]) + s.n[2][c] * z[2]) / s.absdet;
  if (all_pos) {
    double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
    for (int k = 0; k < 3; ++k) {
      double x = v[k][0] / v[k][2], y = v[k][1] / v[k][2];
      xmin = std::min(xmin, x);
      xmax = std::max(xmax, x);
      ymin = std::min(ymin, y);
      ymax = std::max(ymax, y);
    }
    // pixel j has centre (2j+1)/W - 1; a 1e-4 pixel margin keeps the bbox conservative against rounding
    double fx0 = std::ceil((xmin + 1.0) * 0.5 * W - 0.5 - 1e-4), fx1 = std::floor((xmax + 1.0) * 0.5 * W - 0.5 + 1e-4);
    double fy0 = std::ceil((ymin + 1.0) * 0.5 * H - 0.5 - 1e-4), fy1 = std::floor((ymax + 1.0) * 0.5 * H - 0.5 + 1e-4);
    s.x0 = (int)std::min(std::max(0.0, fx0), (double)W);
    s.x1 = (int)std::max(std::min((double)W - 1, fx1), -1.0);
    s.y0 = (int)std::min(std::max(0.0, fy0), (double)H);
    s.y1 = (int)std::max(std::min((double)H - 1, fy1), -1.0);
  } else {
    s.x0 = 0;
    s.x1 = W - 1;
    s.y0 = 0;
    s.y1 = H - 1;
  }
}

}  // namespace

// verts_clip [B,V,4] float32, faces [F,3] int64
//   -> (face_id [B,H,W] int64, depth [B,H,W] float32, bary [B,H,W,3] float32)
std::vector<torch::Tensor> rasterize_cpu(torch::Tensor verts_clip, torch::Tensor faces, int64_t H, int64_t W,
                                         bool cull, int64_t num_threads) {
  TORCH_CHECK(verts_clip.dim() == 3 && verts_clip.size(2) == 4, "verts_clip must be [B,V,4]");
  TORCH_CHECK(faces.dim() == 2 && faces.size(1) == 3, "faces must be [F,3]");
  TORCH_CHECK(faces.size(0) < 2147483647, "too many faces for the CPU kernel");
  verts_clip = verts_clip.to(torch::kFloat32).contiguous();
  faces = faces.to(torch::kInt64).contiguous();
  const int64_t B = verts_clip.size(0), V = verts_clip.size(1), F = faces.size(0);
  auto face_id = torch::full({B, H, W}, -1, torch::kInt64);
  auto depth = torch::zeros({B, H, W}, torch::kFloat32);
  auto bary = torch::zeros({B, H, W, 3}, torch::kFloat32);
  if (F == 0 || B == 0) return {face_id, depth, bary};
  const float* vp = verts_clip.data_ptr<float>();
  const int64_t* fp = faces.data_ptr<int64_t>();
  int64_t* idp = face_id.data_ptr<int64_t>();
  float* dp = depth.data_ptr<float>();
  float* bp = bary.data_ptr<float>();
  std::vector<Setup> setup((size_t)(B * F));
  int nt = (int)std::max<int64_t>(1, num_threads);

  auto run = [&](int64_t n_items, const std::function<void(int64_t, int64_t)>& fn) {
    int t = (int)std::min<int64_t>(nt, n_items);
    if (t <= 1) {
      fn(0, n_items);
      return;
    }
    std::vector<std::thread> pool;
    int64_t chunk = (n_items + t - 1) / t;
    for (int k = 0; k < t; ++k) {
      int64_t a = k * chunk, b = std::min(n_items, a + chunk);
      if (a < b) pool.emplace_back(fn, a, b);
    }
    for (auto& th : pool) th.join();
  };

  run(B * F, [&](int64_t a, int64_t b) {
    for (int64_t k = a; k < b; ++k) {
      int64_t bi = k / F, fi = k % F;
      setup_face(vp + bi * V * 4, fp + fi * 3, (int)H, (int)W, cull, setup[k]);
    }
  });

  const int64_t band = 16;
  const int64_t nbands = (H + band - 1) / band;
  // bin faces into row bands (counting sort, keeps face order so depth ties still keep the smaller id)
  std::vector<int64_t> bin_start((size_t)(B * nbands + 1), 0);
  for (int64_t k = 0; k < B * F; ++k) {
    const Setup& s = setup[k];
    if (s.x0 > s.x1 || s.y0 > s.y1) continue;
    int64_t bi = k / F;
    for (int64_t r = s.y0 / band; r <= s.y1 / band; ++r) bin_start[bi * nbands + r + 1]++;
  }
  for (size_t k = 1; k < bin_start.size(); ++k) bin_start[k] += bin_start[k - 1];
  std::vector<int32_t> bin_faces((size_t)bin_start.back());
  {
    std::vector<int64_t> fill(bin_start.begin(), bin_start.end() - 1);
    for (int64_t k = 0; k < B * F; ++k) {
      const Setup& s = setup[k];
      if (s.x0 > s.x1 || s.y0 > s.y1) continue;
      int64_t bi = k / F;
      for (int64_t r = s.y0 / band; r <= s.y1 / band; ++r) bin_faces[fill[bi * nbands + r]++] = (int32_t)(k - bi * F);
    }
  }
  run(B * nbands, [&](int64_t a, int64_t b) {
    std::vector<double> zbuf((size_t)(band * W));
    std::vector<double> xs((size_t)W);
    for (int64_t j = 0; j < W; ++j) xs[j] = (2.0 * (double)j + 1.0) / (double)W - 1.0;
    for (int64_t item = a; item < b; ++item) {
      int64_t bi = item / nbands, r0 = (item % nbands) * band, r1 = std::min(H, r0 + band) - 1;
      std::fill(zbuf.begin(), zbuf.end(), std::numeric_limits<double>::infinity());
      int64_t* ids = idp + bi * H * W;
      float* dd = dp + bi * H * W;
      float* bb = bp + bi * H * W * 3;
      const Setup* S = setup.data() + bi * F;
      for (int64_t q = bin_start[item]; q < bin_start[item + 1]; ++q) {
        const int64_t f = bin_faces[q];
        const Setup& s = S[f];
        int64_t ya = std::max<int64_t>(s.y0, r0), yb = std::min<int64_t>(s.y1, r1);
        for (int64_t i = ya; i <= yb; ++i) {
          double py = (2.0 * (double)i + 1.0) / (double)H - 1.0;
          double b0 = s.n[0][1] * py, b1 = s.n[1][1] * py, b2 = s.n[2][1] * py, bq = s.q[1] * py;
          double* zr = zbuf.data() + (i - r0) * W;
          for (int64_t j = s.x0; j <= s.x1; ++j) {
            double px = xs[j];
            double c0 = (s.n[0][0] * px + b0) + s.n[0][2];
            if (c0 < 0.0) continue;
            double c1 = (s.n[1][0] * px + b1) + s.n[1][2];
            if (c1 < 0.0) continue;
            double c2 = (s.n[2][0] * px + b2) + s.n[2][2];
            if (c2 < 0.0) continue;
            double sum = (c0 + c1) + c2;
            if (!(sum > 0.0)) continue;
            double zn = (s.q[0] * px + bq) + s.q[2];
            if (zn < -1.0 || zn > 1.0) continue;
            double d = s.absdet / sum;
            if (d < zr[j]) {
              zr[j] = d;
              ids[i * W + j] = f;
              dd[i * W + j] = (float)d;
              float* bw = bb + (i * W + j) * 3;
              bw[0] = (float)(c0 / sum);
              bw[1] = (float)(c1 / sum);
              bw[2] = (float)(c2 / sum);
            }
          }
        }
      }
    }
  });
  return {face_id, depth, bary};
}

// Backward of (bary, depth) = f(verts_clip) for the visible faces (see raster.py, _BaryGrad):
// c_i = n_i . p, s = sum c, bary = c / s, depth = det / s, n_0 = v_1 x v_2 (cyclic), det = v_0 . n_0.
// verts_clip [B,V,4] f32, faces [F,3] i64, face_id [B,H,W] i64, bary [B,H,W,3] f32, depth [B,H,W] f32,
// g_bary [B,H,W,3] f32, g_depth [B,H,W] f32 -> grad verts_clip [B,V,4] f32 (z component 0).
torch::Tensor bary_backward_cpu(torch::Tensor verts_clip, torch::Tensor faces, torch::Tensor face_id,
                                torch::Tensor bary, torch::Tensor depth, torch::Tensor g_bary,
                                torch::Tensor g_depth) {
  verts_clip = verts_clip.to(torch::kFloat32).contiguous();
  faces = faces.to(torch::kInt64).contiguous();
  face_id = face_id.contiguous();
  bary = bary.to(torch::kFloat32).contiguous();
  depth = depth.to(torch::kFloat32).contiguous();
  g_bary = g_bary.to(torch::kFloat32).contiguous();
  g_depth = g_depth.to(torch::kFloat32).contiguous();
  const int64_t B = verts_clip.size(0), V = verts_clip.size(1), F = faces.size(0);
  const int64_t H = face_id.size(1), W = face_id.size(2);
  auto grad = torch::zeros({B, V, 4}, torch::kFloat32);
  const float* vp = verts_clip.data_ptr<float>();
  const int64_t* fp = faces.data_ptr<int64_t>();
  const int64_t* ip = face_id.data_ptr<int64_t>();
  const float* bp = bary.data_ptr<float>();
  const float* dp = depth.data_ptr<float>();
  const float* gbp = g_bary.data_ptr<float>();
  const float* gdp = g_depth.data_ptr<float>();
  float* gp = grad.data_ptr<float>();
  std::vector<double> acc((size_t)(F * 10));  // per face: G (3x3) and gdet
  std::vector<double> det((size_t)F);
  std::vector<char> seen((size_t)F);
  for (int64_t b = 0; b < B; ++b) {
    const float* vb = vp + b * V * 4;
    std::fill(acc.begin(), acc.end(), 0.0);
    std::fill(seen.begin(), seen.end(), 0);
    const int64_t* ids = ip + b * H * W;
    for (int64_t i = 0; i < H; ++i) {
      double py = (2.0 * (double)i + 1.0) / (double)H - 1.0;
      for (int64_t j = 0; j < W; ++j) {
        int64_t q = i * W + j, f = ids[q];
        if (f < 0) continue;
        if (!seen[f]) {
          double v[3][3], n0[3];
          for (int k = 0; k < 3; ++k) {
            const float* pv = vb + 4 * fp[3 * f + k];
            v[k][0] = pv[0];
            v[k][1] = pv[1];
            v[k][2] = pv[3];
          }
          cross(v[1], v[2], n0);
          det[f] = v[0][0] * n0[0] + v[0][1] * n0[1] + v[0][2] * n0[2];
          seen[f] = 1;
        }
        if (det[f] == 0.0) continue;
        double px = (2.0 * (double)j + 1.0) / (double)W - 1.0;
        int64_t pq = b * H * W + q;
        double d = dp[pq], inv_s = d / det[f];
        const float* lam = bp + 3 * pq;
        const float* gl = gbp + 3 * pq;
        double gd = gdp[pq];
        double dot = (double)gl[0] * lam[0] + (double)gl[1] * lam[1] + (double)gl[2] * lam[2];
        double* a = acc.data() + 10 * f;
        for (int k = 0; k < 3; ++k) {
          double dc = ((double)gl[k] - dot) * inv_s - gd * d * inv_s;
          a[3 * k + 0] += dc * px;
          a[3 * k + 1] += dc * py;
          a[3 * k + 2] += dc;
        }
        a[9] += gd * inv_s;
      }
    }
    float* gb = gp + b * V * 4;
    for (int64_t f = 0; f < F; ++f) {
      if (!seen[f]) continue;
      const double* a = acc.data() + 10 * f;
      double v[3][3], n[3][3];
      for (int k = 0; k < 3; ++k) {
        const float* pv = vb + 4 * fp[3 * f + k];
        v[k][0] = pv[0];
        v[k][1] = pv[1];
        v[k][2] = pv[3];
      }
      cross(v[1], v[2], n[0]);
      cross(v[2], v[0], n[1]);
      cross(v[0], v[1], n[2]);
      const double* G0 = a;
      const double* G1 = a + 3;
      const double* G2 = a + 6;
      double gdet = a[9];
      double dv[3][3], t1[3], t2[3];
      // dv0 = gdet n0 + G1 x v2 + v1 x G2 ; dv1 = gdet n1 + v2 x G0 + G2 x v0 ; dv2 = gdet n2 + G0 x v1 + v0 x G1
      cross(G1, v[2], t1);
      cross(v[1], G2, t2);
      for (int c = 0; c < 3; ++c) dv[0][c] = gdet * n[0][c] + t1[c] + t2[c];
      cross(v[2], G0, t1);
      cross(G2, v[0], t2);
      for (int c = 0; c < 3; ++c) dv[1][c] = gdet * n[1][c] + t1[c] + t2[c];
      cross(G0, v[1], t1);
      cross(v[0], G1, t2);
      for (int c = 0; c < 3; ++c) dv[2][c] = gdet * n[2][c] + t1[c] + t2[c];
      for (int k = 0; k < 3; ++k) {
        float* g = gb + 4 * fp[3 * f + k];
        g[0] += (float)dv[k][0];
        g[1] += (float)dv[k][1];
        g[3] += (float)dv[k][2];
      }
    }
  }
  return grad;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rasterize_cpu", &rasterize_cpu, "visibility pass: face id, depth and barycentrics per pixel");
  m.def("bary_backward_cpu", &bary_backward_cpu, "gradient of barycentrics and depth w.r.t. clip vertices");
}
